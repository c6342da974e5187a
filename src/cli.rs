//! Command-line interface: parsing and the exit behaviour of each command.

mod offline;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::appliance;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::config::layers::Layered;
use crate::ids::AccountId;
use offline::{Offline, admin, backup_now, check, init, keys};

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
    /// Prepares a new appliance without the setup page, for unattended installs: the data
    /// directory with its keys, the CA and server certificate, and the first account with
    /// its admin. Does nothing (and succeeds) once an account exists.
    Init {
        #[command(flatten)]
        account: NewAccount,
        /// A file holding the admin's password (one line). Without it the admin gets a
        /// random password, printed once, to be changed at first sign-in.
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
    },
    /// The effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The security log of a stopped appliance.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The certificate the appliance serves: the company's own instead of the appliance
    /// CA's. Works while the appliance runs; it serves a new one within seconds.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Master key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Export an account's content (or one customer's) as a tar archive.
    Export {
        #[arg(long)]
        account: AccountId,
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
pub enum ConfigCommand {
    /// Prints every setting as TOML with where its value came from (default, the file,
    /// an environment variable, a flag); secrets masked.
    Show,
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
        account: Option<AccountId>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Check a certificate and its key, then serve them: PEM (`--cert` with the chain,
    /// server certificate first, and `--key`) or PKCS#12 (`--pkcs12`).
    Import {
        #[arg(long, requires = "key", conflicts_with = "pkcs12")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        #[arg(long, required_unless_present = "cert")]
        pkcs12: Option<PathBuf>,
        /// A file holding the PKCS#12 password (one line); without it, the password is empty.
        #[arg(long, requires = "pkcs12")]
        password_file: Option<PathBuf>,
    },
    /// The certificate that is served (or will be at the next start).
    Show,
    /// Stop serving the imported certificate; the appliance CA's serves again.
    Remove,
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
        account: AccountId,
    },
    /// Create an account and its first admin; prints a temporary password to hand over.
    Create {
        #[command(flatten)]
        account: NewAccount,
    },
}

/// An account and its first admin, as the command line names them.
#[derive(Debug, clap::Args)]
pub struct NewAccount {
    /// The organisation's name.
    #[arg(long)]
    pub organisation: String,
    #[arg(long)]
    pub admin_email: String,
    #[arg(long)]
    pub admin_name: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user in an account; prints a temporary password (changed at first sign-in).
    Create {
        #[arg(long)]
        account: AccountId,
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
    /// The configuration's layers: defaults, the file, the environment, then the flags.
    pub fn load_layered(&self) -> anyhow::Result<Layered> {
        // Variables that are not Unicode cannot name a setting; they are someone else's.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let mut layered = Layered::load(self.config.as_deref(), env)?;
        for warning in &layered.warnings {
            tracing::warn!("{warning}");
        }
        let config = &mut layered.config;
        let mut flags = Vec::new();
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
            flags.push(("data_dir", "--data-dir"));
        }
        match &self.command {
            Command::Admin { .. }
            | Command::Backup { .. }
            | Command::Restore { .. }
            | Command::Keys { .. }
            | Command::Cert { .. }
            | Command::Audit { .. }
            | Command::Firewall { .. }
            | Command::Check
            | Command::Init { .. }
            | Command::Config { .. }
            | Command::Export { .. } => {}
            Command::Serve {
                listen,
                media_listen,
                metrics_listen,
            } => {
                if let Some(addr) = metrics_listen {
                    config.metrics.listen = Some(*addr);
                    flags.push(("metrics.listen", "--metrics-listen"));
                }
                if let Some(addr) = listen {
                    config.http.listen = *addr;
                    flags.push(("http.listen", "--listen"));
                }
                if let Some(addr) = media_listen {
                    config.media.listen = *addr;
                    flags.push(("media.listen", "--media-listen"));
                }
            }
        }
        config.validate()?;
        for (key, flag) in flags {
            layered.set_by_flag(key, flag);
        }
        Ok(layered)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let layered = cli.load_layered()?;
    let config = layered.config.clone();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            print!("{}", layered.show());
            Ok(())
        }
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
        Command::Cert { command } => offline::cert(&config, command),
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
        Command::Init {
            account,
            admin_password_file,
        } => init(&config, &account, admin_password_file.as_deref()),
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
                    for entry in entries.iter().filter(|e| {
                        account.is_none() || e.account_id.as_deref() == account.as_deref()
                    }) {
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
            offline.lifecycle.export(&account, None, &scope, file)?;
            println!("exported to {}", out.display());
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let systemd = crate::systemd::SystemdNotify::from_env();
    let running = appliance::start_supervised(config, Arc::new(SystemClock), systemd).await?;
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
