//! Command-line interface: parsing and the exit behaviour of each command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::appliance;
use crate::clock::SystemClock;
use crate::config::Config;

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
    }
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
