//! Command-line interface: parsing and the exit behaviour of each command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::appliance;
use crate::audit::{Audit, GuessThrottle};
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
pub enum AccountCommand {
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
            Command::Admin { .. } => {}
            Command::Serve {
                listen,
                media_listen,
            } => {
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
    }
}

/// The identity service over a stopped appliance's store. Opening fails while the
/// appliance runs, because the store is locked by the running process.
fn offline_auth(config: &Config) -> anyhow::Result<Auth> {
    let store = Store::open_data_dir(&config.data_dir)?;
    let clock: crate::clock::SharedClock = Arc::new(SystemClock);
    let audit = Arc::new(Audit::open(&store, clock.clone())?);
    let throttle = Arc::new(GuessThrottle::new(
        config.sessions.guess_limit_per_minute,
        clock.clone(),
    ));
    Ok(Auth::new(
        &store,
        clock,
        audit,
        throttle,
        config.sessions.setup_code_ttl_secs,
    )?)
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    if !config.data_dir.join("store").exists() {
        anyhow::bail!(
            "no appliance data in {}; run `sightline serve` once first",
            config.data_dir.display()
        );
    }
    let auth = offline_auth(&config)?;
    let operator_ip = std::net::IpAddr::from([127, 0, 0, 1]);
    match command {
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = appliance::start(config, Arc::new(SystemClock)).await?;
    println!("Sightline is running.");
    println!("  Console:        {}", running.console_url);
    println!("  Media (UDP):    {}", running.media_addr);
    println!("  CA certificate: {}ca.pem", running.console_url);
    if let Some(code) = &running.setup_code {
        println!("  Setup code:     {code}");
        println!("    Open the console and enter this code to create the first account admin.");
        println!("    It can be used once and expires; restart the appliance for a new one.");
    }
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
