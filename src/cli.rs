//! Command-line interface: parsing and the exit behaviour of each command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::appliance;
use crate::audit::Audit;
use crate::auth::{Auth, NewUser, Role};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "sightline",
    version,
    about = "Live camera remote support appliance"
)]
pub struct Cli {
    /// TOML configuration file; without one the embedded defaults apply.
    #[arg(long, global = true, env = "SIGHTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store, certificates); overrides the config file.
    #[arg(long, global = true, env = "SIGHTLINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take an encrypted backup of a stopped appliance now (the running appliance takes
    /// them on its schedule).
    Backup {
        /// Force a full backup instead of an incremental one.
        #[arg(long)]
        full: bool,
    },
    /// Restore the newest backup chain into the (empty) data directory.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The admin's age identity file (the private half of backup.recipient).
        #[arg(long)]
        identity: PathBuf,
    },
    /// The host firewall (nftables table inet sightline).
    Firewall {
        #[command(subcommand)]
        command: FirewallCommand,
    },
    /// Self-test: configuration, ports, certificate, store, firewall.
    Check,
    /// The security log of a stopped appliance.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Master key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Export an account's content (or one customer's) as a tar archive.
    Export {
        #[arg(long)]
        account: String,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Offline administration of a stopped appliance's data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run the appliance: HTTPS console and signaling, media relay.
    Serve {
        /// HTTPS listen address, e.g. 0.0.0.0:8443.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// UDP media listen address, e.g. 0.0.0.0:15000.
        #[arg(long)]
        media_listen: Option<SocketAddr>,
        /// Prometheus metrics listen address, e.g. 127.0.0.1:9464.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Accounts (organisations).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Users of an account.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Print the ruleset for the configuration.
    Render,
    /// Validate the ruleset with `nft -c` without applying it.
    Check,
    /// Load the ruleset atomically (needs CAP_NET_ADMIN).
    Apply,
    /// Load the ruleset, then keep applying the appliance's blocklist requests.
    Helper {
        #[arg(long, default_value = "/run/sightline/firewall.sock")]
        socket: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the security log's hash chain; fails if an entry was changed, removed or
    /// reordered.
    Verify,
    /// Print the security log as JSON lines (all, or one account's).
    Export {
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Replace the master key and re-wrap every account key under the new one.
    Rotate,
    /// Make an age identity for backups: prints its public key for `backup.recipient`.
    BackupIdentity {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Delete an account: its key is destroyed first, so its data is unreadable
    /// everywhere, backups included.
    Delete {
        #[arg(long)]
        account: String,
    },
    /// Create an account and its first admin; prints a temporary password to hand over.
    Create {
        #[arg(long)]
        organisation: String,
        #[arg(long)]
        admin_email: String,
        #[arg(long)]
        admin_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user in an account; prints a temporary password (changed at first sign-in).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "technician")]
        role: CliRole,
    },
    /// Set a temporary password (changed at next sign-in) and end the user's sign-ins.
    ResetPassword {
        #[arg(long)]
        email: String,
    },
    /// End a sign-in lockout.
    Unlock {
        #[arg(long)]
        email: String,
    },
    /// List every user of every account.
    List,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CliRole {
    Technician,
    AccountAdmin,
}

impl Cli {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        match &self.command {
            Command::Admin { .. }
            | Command::Backup { .. }
            | Command::Restore { .. }
            | Command::Keys { .. }
            | Command::Audit { .. }
            | Command::Firewall { .. }
            | Command::Check
            | Command::Export { .. } => {}
            Command::Serve {
                listen,
                media_listen,
                metrics_listen,
            } => {
                if let Some(addr) = metrics_listen {
                    config.metrics.listen = Some(*addr);
                }
                if let Some(addr) = listen {
                    config.http.listen = *addr;
                }
                if let Some(addr) = media_listen {
                    config.media.listen = *addr;
                }
            }
        }
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.load_config()?;
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Admin { command } => admin(config, command).await,
        Command::Backup { full } => backup_now(&config, full),
        Command::Restore { from, identity } => {
            let report = crate::store::backup::restore(&from, &identity, &config.data_dir)?;
            println!(
                "restored {} archives into {}: {} records, {} files ({} left out: deleted accounts)",
                report.archives,
                config.data_dir.display(),
                report.records,
                report.files,
                report.skipped_without_key
            );
            println!(
                "a new master key was made: {}/master.key",
                config.data_dir.display()
            );
            Ok(())
        }
        Command::Keys { command } => keys(&config, command),
        Command::Firewall { command } => {
            match command {
                FirewallCommand::Render => print!("{}", crate::firewall::render(&config)),
                FirewallCommand::Check => {
                    crate::firewall::check(&config)?;
                    println!("the ruleset is valid");
                }
                FirewallCommand::Apply => {
                    crate::firewall::apply(&config)?;
                    println!("table inet sightline loaded");
                }
                FirewallCommand::Helper { socket } => {
                    crate::firewall::run_helper(&config, &socket)?;
                }
            }
            Ok(())
        }
        Command::Check => check(&config),
        Command::Audit { command } => {
            let offline = Offline::open(&config)?;
            let entries = offline.audit.entries()?;
            match command {
                AuditCommand::Verify => {
                    let checked = offline
                        .audit
                        .verify()?
                        .map_err(|e| anyhow::anyhow!("the security log was tampered with: {e}"))?;
                    println!("{checked} entries; the hash chain is intact");
                }
                AuditCommand::Export { account } => {
                    for entry in entries
                        .iter()
                        .filter(|e| account.is_none() || e.account_id == account)
                    {
                        println!("{}", serde_json::to_string(entry)?);
                    }
                }
            }
            Ok(())
        }
        Command::Export {
            account,
            session,
            customer,
            out,
        } => {
            let offline = Offline::open(&config)?;
            let scope = crate::lifecycle::Scope {
                session_id: session,
                customer_reference: customer,
            };
            let file = std::fs::File::create(&out)?;
            offline.lifecycle.export(&account, &scope, file)?;
            println!("exported to {}", out.display());
            Ok(())
        }
    }
}

/// The appliance's services over a stopped appliance's data directory.
struct Offline {
    store: Store,
    audit: Arc<Audit>,
    auth: Arc<Auth>,
    lifecycle: crate::lifecycle::Lifecycle,
}

impl Offline {
    fn open(config: &Config) -> anyhow::Result<Self> {
        if !Store::exists_in(&config.data_dir) {
            anyhow::bail!(
                "no appliance data in {}; run `sightline serve` once first",
                config.data_dir.display()
            );
        }
        let store = Store::open_data_dir(&config.data_dir, config.store.cache_bytes())?;
        let clock: crate::clock::SharedClock = Arc::new(SystemClock);
        let appliance::Core {
            audit,
            throttle,
            auth,
        } = appliance::Core::open(&store, config, clock.clone())?;
        let live = Arc::new(crate::live::Live::new(
            &store,
            clock.clone(),
            audit.clone(),
            throttle,
            crate::media::MediaHandle::detached(),
            config.sessions.clone(),
        )?);
        let lifecycle = crate::lifecycle::Lifecycle::new(
            store.clone(),
            auth.clone(),
            live,
            audit.clone(),
            clock,
            config.retention.clone(),
            config.backup.clone(),
        );
        Ok(Self {
            store,
            audit,
            auth,
            lifecycle,
        })
    }
}

/// Operator self-test; each line says what was checked. Fails if any check failed.
fn check(config: &Config) -> anyhow::Result<()> {
    let mut failed = 0;
    let mut report = |what: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {what}: {detail}"),
        Err(detail) => {
            failed += 1;
            println!("FAIL  {what}: {detail}");
        }
    };
    report("config", Ok("valid".into()));
    let https = config.http.listen;
    report(
        "https port",
        match std::net::TcpListener::bind(https) {
            Ok(_) => Ok(format!("{https} is free")),
            Err(e) => Err(format!("{https}: {e} (in use by a running appliance?)")),
        },
    );
    let media = config.media.listen;
    report(
        "media port",
        match std::net::UdpSocket::bind(media) {
            Ok(_) => Ok(format!("udp {media} is free")),
            Err(e) => Err(format!("udp {media}: {e}")),
        },
    );
    report("certificate", crate::tls::check(&config.data_dir));
    report(
        "store",
        if Store::exists_in(&config.data_dir) {
            match Store::open_data_dir(&config.data_dir, config.store.cache_bytes()) {
                Ok(_) => Ok("opens with the master key".into()),
                Err(crate::store::StoreError::InUse { .. }) => {
                    Ok("in use by the running appliance".into())
                }
                Err(e) => Err(e.to_string()),
            }
        } else {
            Ok("not created yet; it is created on first start".into())
        },
    );
    report(
        "firewall",
        crate::firewall::check(config)
            .map(|()| {
                if crate::firewall::loaded() {
                    "ruleset valid and table inet sightline loaded".to_owned()
                } else {
                    "ruleset valid; table not loaded (sightline-firewall.service applies it)"
                        .to_owned()
                }
            })
            .map_err(|e| e.to_string()),
    );
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn backup_now(config: &Config, full: bool) -> anyhow::Result<()> {
    let (Some(directory), Some(recipient)) = (&config.backup.directory, &config.backup.recipient)
    else {
        anyhow::bail!("set backup.directory and backup.recipient in the config file first");
    };
    let offline = Offline::open(config)?;
    let archive = crate::store::backup::run(
        &offline.store,
        &config.data_dir,
        &crate::store::backup::BackupPolicy {
            directory,
            recipient,
            incrementals_per_full: config.backup.incrementals_per_full,
            keep_full: config.backup.keep_full,
        },
        crate::clock::Clock::now_ms(&SystemClock),
        full,
    )?;
    println!("backup written: {}", archive.display());
    Ok(())
}

fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate => {
            let offline = Offline::open(config)?;
            let path = config.data_dir.join(crate::store::keys::MASTER_KEY_FILE);
            let new = crate::store::keys::MasterKey::generate();
            let pending = path.with_extension("key.new");
            new.write(&pending)?;
            offline.store.rotate_master(new)?;
            std::fs::rename(&pending, &path)?;
            println!("master key rotated; every account key is now wrapped by the new one");
            Ok(())
        }
        KeysCommand::BackupIdentity { out } => {
            let key = crate::store::keys::MasterKey::generate();
            key.write(&out)?;
            let text = std::fs::read_to_string(&out)?;
            let public = text
                .lines()
                .find_map(|l| l.strip_prefix("# public key: "))
                .unwrap_or_default();
            println!(
                "backup identity written to {} (keep it offline)",
                out.display()
            );
            println!("backup.recipient = \"{public}\"");
            Ok(())
        }
    }
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let offline = Offline::open(&config)?;
    let auth = &offline.auth;
    let operator_ip = std::net::IpAddr::from([127, 0, 0, 1]);
    match command {
        AdminCommand::Account {
            command: AccountCommand::Delete { account },
        } => {
            auth.account_record(&account)?;
            offline
                .lifecycle
                .delete_account(&account, "deleted by the operator")
                .await?;
            println!("account {account} deleted; its key is destroyed");
        }
        AdminCommand::Account {
            command:
                AccountCommand::Create {
                    organisation,
                    admin_email,
                    admin_name,
                },
        } => {
            let (account, user, password) =
                auth.create_account(&organisation, &admin_email, &admin_name)?;
            offline.store.flush().await?;
            println!("account {} ({})", account.id, account.organisation);
            println!("admin {} <{}>", user.id, user.email);
            println!("temporary password: {password}");
            println!("(the admin must choose a new password at first sign-in)");
        }
        AdminCommand::User { command } => match command {
            UserCommand::Create {
                account,
                email,
                name,
                role,
            } => {
                let operator = auth.operator_for(&account)?;
                let password = crate::auth::temporary_password();
                let user = auth
                    .create_user(
                        &operator,
                        NewUser {
                            email,
                            display_name: name,
                            role: match role {
                                CliRole::Technician => Role::Technician,
                                CliRole::AccountAdmin => Role::AccountAdmin,
                            },
                            password: password.clone(),
                            group_ids: Vec::new(),
                        },
                        operator_ip,
                    )
                    .await?;
                println!("user {} <{}>", user.id, user.email);
                println!("temporary password: {password}");
            }
            UserCommand::ResetPassword { email } => {
                let user = auth.operator_user(&email)?;
                let operator = auth.operator_for(&user.account_id)?;
                let password = crate::auth::temporary_password();
                auth.reset_password(&operator, &user.user_id, password.clone(), operator_ip)
                    .await?;
                println!("temporary password for {}: {password}", user.email);
            }
            UserCommand::Unlock { email } => {
                let user = auth.operator_user(&email)?;
                let operator = auth.operator_for(&user.account_id)?;
                auth.unlock(&operator, &user.user_id, operator_ip)?;
                offline.store.flush().await?;
                println!("unlocked {}", user.email);
            }
            UserCommand::List => {
                for (account, user) in auth.all_users()? {
                    println!(
                        "{}\t{}\t{}\t{:?}\t{}\t{}\t2fa={}",
                        account.id,
                        account.organisation,
                        user.email,
                        user.role,
                        user.display_name,
                        if user.active { "active" } else { "inactive" },
                        user.two_factor_enabled,
                    );
                }
            }
        },
    }
    Ok(())
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    config.systemd = crate::systemd::SystemdNotify::from_env();
    let running = appliance::start(config, Arc::new(SystemClock)).await?;
    println!("Sightline is running.");
    println!("  Console:        {}", running.console_url);
    println!("  Media (UDP):    {}", running.media_addr);
    if let Some(addr) = running.metrics_addr {
        println!("  Metrics:        http://{addr}/metrics");
    }
    println!("  CA certificate: {}ca.pem", running.console_url);
    if let Some(code) = &running.setup_code {
        println!("  Setup code:     {code}");
        println!("    Open the console and enter this code to create the first account admin.");
        println!("    It can be used once and expires; restart the appliance for a new one.");
    }
    println!("Stop it with Ctrl-C or SIGTERM.");
    tracing::info!(console = %running.console_url, "ready");

    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
