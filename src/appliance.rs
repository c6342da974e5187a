//! Wiring and lifecycle: opens the store, prepares TLS, binds the listeners, starts the
//! relay and the HTTPS server, and shuts everything down in order.

mod tasks;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState, Undocumented};
use crate::audit::AuditKind;
use crate::audit::{Actor, Audit, GuessThrottle};
use crate::auth::{Auth, AuthError};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::live::Live;
use crate::media;
use crate::shutdown::Shutdown;
use crate::store::backup::{self, BackupError, BackupPolicy};
use crate::store::{Store, StoreError};
use crate::systemd::SystemdNotify;
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen for HTTPS on {addr}: {source}")]
    BindHttps {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for media on UDP {addr}: {source}")]
    BindMedia {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot send the security log to syslog at {collector}: {source}")]
    Syslog {
        collector: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    BindMetrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot send invitations as configured: {0}")]
    Messaging(#[from] crate::messaging::SetupError),
    #[error("cannot start the media relay: {0}")]
    Media(std::io::Error),
    #[error("cannot prepare first-run setup: {0}")]
    Setup(#[from] AuthError),
}

/// A running appliance.
pub struct Running {
    pub https_addr: SocketAddr,
    pub media_addr: SocketAddr,
    systemd: Option<SystemdNotify>,
    /// The plain-HTTP metrics listener, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The one-time code for creating the first account admin, when none exists yet.
    pub setup_code: Option<String>,
    pub ca_pem: String,
    pub console_url: String,
    pub data_dir: PathBuf,
    store: Store,
    audit: Arc<Audit>,
    lifecycle: Arc<Lifecycle>,
    backups: Backups,
    live: Arc<Live>,
    api: Arc<ApiState>,
    media: media::MediaHandle,
    media_thread: std::thread::JoinHandle<()>,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

/// The security log, the guessing throttle and the identity service over an open store:
/// wired the same way for the running appliance and for the offline tools.
pub struct Core {
    pub audit: Arc<Audit>,
    pub throttle: Arc<GuessThrottle>,
    pub auth: Arc<Auth>,
}

impl Core {
    pub fn open(store: &Store, config: &Config, clock: SharedClock) -> Result<Self, StoreError> {
        let audit = Arc::new(Audit::open(store, clock.clone())?);
        let throttle = Arc::new(GuessThrottle::new(
            config.sessions.guess_limit_per_minute,
            clock.clone(),
        ));
        let auth = Arc::new(Auth::new(
            store,
            clock,
            audit.clone(),
            throttle.clone(),
            config.sessions.setup_code_ttl_secs,
        )?);
        Ok(Self {
            audit,
            throttle,
            auth,
        })
    }
}

/// Starts the appliance on its own: nothing supervises it (tests, or a foreground run).
pub async fn start(config: Config, clock: SharedClock) -> Result<Running, StartError> {
    start_supervised(config, clock, None).await
}

/// Starts the appliance and, under systemd, tells it when the appliance is ready and feeds
/// its watchdog while the media loop turns.
pub async fn start_supervised(
    config: Config,
    clock: SharedClock,
    systemd: Option<SystemdNotify>,
) -> Result<Running, StartError> {
    let data_dir = config.data_dir.clone();
    create_private_dir(&data_dir)?;
    let store = Store::open_data_dir(&data_dir, config.store.cache_bytes())?;
    let Core {
        audit,
        throttle,
        auth,
    } = Core::open(&store, &config, clock.clone())?;
    connect_syslog(&audit, &config)?;
    let messenger = Arc::new(crate::messaging::Messenger::new(&config)?);
    let tls = prepare_tls(&store, &config)?;
    let (listener, https_addr) = bind_https(&config).await?;
    let (media, media_events, media_thread) = start_relay(&config, https_addr)?;
    audit.set_blocklist(blocklist(&config), config.firewall.block_secs);
    let live = Arc::new(Live::new(
        &store,
        clock.clone(),
        audit.clone(),
        throttle,
        media.clone(),
        config.sessions.clone(),
    )?);
    let lifecycle = Arc::new(Lifecycle::new(
        store.clone(),
        auth.clone(),
        live.clone(),
        audit.clone(),
        clock.clone(),
        config.retention.clone(),
        config.backup.clone(),
    ));
    let backups = Backups {
        store: store.clone(),
        config: config.clone(),
        audit: audit.clone(),
        clock,
    };

    let shutdown = Shutdown::new();
    let mut tasks = vec![
        tokio::spawn(tasks::route_media_events(
            media_events,
            live.clone(),
            audit.clone(),
            blocklist(&config),
            config.sessions.max_duration_secs,
        )),
        tokio::spawn(tasks::sweep_sessions(
            live.clone(),
            auth.clone(),
            shutdown.subscribe(),
        )),
        tokio::spawn(tasks::sweep_retention(
            lifecycle.clone(),
            shutdown.subscribe(),
        )),
    ];
    if config.backup.directory.is_some() {
        let every = Duration::from_secs(config.backup.interval_hours * 3600);
        tasks.push(tokio::spawn(tasks::scheduled_backups(
            backups.clone(),
            every,
            shutdown.subscribe(),
        )));
    }
    let state = Arc::new(ApiState {
        auth: auth.clone(),
        live: live.clone(),
        audit: audit.clone(),
        lifecycle: lifecycle.clone(),
        store: store.clone(),
        ca_pem: tls.ca_pem.clone(),
        public_url: config.http.public_url.clone(),
        media_public_ip: config.media.public_address,
        stopping: shutdown.subscribe(),
        undocumented: Undocumented::default(),
        certificates: tls.certificates.clone(),
        messenger,
        server_names: tls::default_names(&config.http.server_names),
    });
    tasks.push(tokio::spawn(tasks::watch_certificates(
        tls.certificates.clone(),
        shutdown.subscribe(),
    )));
    tasks.push(tokio::spawn(crate::http::serve(
        listener,
        media.clone(),
        tls.server_config,
        api::router(state.clone()),
        shutdown.subscribe(),
    )));
    let metrics = crate::metrics::Metrics {
        firewall: blocklist(&config),
        live: live.clone(),
        media: media.clone(),
        auth: auth.clone(),
        audit: audit.clone(),
        store: store.clone(),
        certificates: tls.certificates.clone(),
    };
    let metrics_addr = serve_metrics(&config, metrics, &shutdown, &mut tasks).await?;

    let setup_code = auth.issue_setup_code()?;
    let console_url = console_url(&config, https_addr);
    // Every listener is bound and the store is open: tell systemd.
    if let Some(notify) = &systemd {
        notify.send(&format!("READY=1\nSTATUS=Console: {console_url}"));
        if let Some(period) = notify.watchdog {
            tasks.push(tokio::spawn(tasks::feed_watchdog(
                notify.clone(),
                period,
                media.clone(),
                shutdown.subscribe(),
            )));
        }
    }
    Ok(Running {
        https_addr,
        media_addr: media.local_addr(),
        metrics_addr,
        systemd,
        setup_code,
        ca_pem: tls.ca_pem,
        console_url,
        data_dir,
        store,
        audit,
        lifecycle,
        backups,
        live,
        api: state,
        media,
        media_thread,
        shutdown,
        tasks,
    })
}

/// Copies the security log to the configured syslog collector.
fn connect_syslog(audit: &Audit, config: &Config) -> Result<(), StartError> {
    if let Some(collector) = config.audit.syslog_udp {
        audit
            .set_syslog(collector)
            .map_err(|source| StartError::Syslog { collector, source })?;
    }
    Ok(())
}

/// The names a certificate the company issues must cover: the public URL's host and the
/// configured server names (the appliance CA's also covers loopback and the host name).
pub fn certificate_names(config: &Config) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(url) = &config.http.public_url {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        if !host.is_empty() {
            names.push(host.to_ascii_lowercase());
        }
    }
    for name in &config.http.server_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The appliance CA and server certificate for the configured names, made on first use;
/// an imported certificate instead, when there is one that checks out.
pub(crate) fn prepare_tls(store: &Store, config: &Config) -> Result<tls::ApplianceTls, StartError> {
    let mut names = tls::default_names(&config.http.server_names);
    if let Some(ip) = config.media.public_address {
        names.push(ip.to_string());
    }
    let tls = tls::load_or_create(store, &config.data_dir, &names, &certificate_names(config))?;
    if !tls.refused_names.is_empty() {
        tracing::warn!(
            names = ?tls.refused_names,
            "the appliance CA's name constraints do not permit these names; they are left out of the server certificate"
        );
    }
    Ok(tls)
}

async fn bind_https(config: &Config) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::BindHttps {
        addr: config.http.listen,
        source,
    };
    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// Binds the media port and starts the relay's workers; ICE-TCP is announced on the
/// HTTPS port unless a port forwarded in front of it is configured.
fn start_relay(
    config: &Config,
    https_addr: SocketAddr,
) -> Result<
    (
        media::MediaHandle,
        mpsc::UnboundedReceiver<media::MediaEvent>,
        std::thread::JoinHandle<()>,
    ),
    StartError,
> {
    let udp = media::bind(config.media.listen, config.media.workers).map_err(|source| {
        StartError::BindMedia {
            addr: config.media.listen,
            source,
        }
    })?;
    media::start(
        udp,
        Some(config.media.public_tcp_port.unwrap_or(https_addr.port())),
        config.firewall.malformed_datagrams_per_minute,
        Duration::from_secs(config.media.reconnect_grace_secs),
    )
    .map_err(StartError::Media)
}

fn blocklist(config: &Config) -> crate::firewall::BlocklistClient {
    crate::firewall::BlocklistClient::new(config.firewall.helper_socket.clone())
}

/// Serves `/metrics` on its own plain-HTTP listener, when one is configured.
async fn serve_metrics(
    config: &Config,
    metrics: crate::metrics::Metrics,
    shutdown: &Shutdown,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(listen) = config.metrics.listen else {
        return Ok(None);
    };
    let bind_error = |source| StartError::BindMetrics {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    tasks.push(tokio::spawn(crate::metrics::serve(
        listener,
        metrics,
        shutdown.subscribe(),
    )));
    Ok(Some(addr))
}

/// Where people open the console: the configured public URL, or the listener's address.
fn console_url(config: &Config, https_addr: SocketAddr) -> String {
    match &config.http.public_url {
        Some(url) => format!("{}/", url.trim_end_matches('/')),
        None => {
            let host = if https_addr.ip().is_unspecified() {
                "localhost".to_owned()
            } else if https_addr.is_ipv6() {
                format!("[{}]", https_addr.ip())
            } else {
                https_addr.ip().to_string()
            };
            format!("https://{host}:{}/", https_addr.port())
        }
    }
}

/// Takes scheduled and on-demand backups of a running appliance.
#[derive(Clone)]
struct Backups {
    store: Store,
    config: Config,
    audit: Arc<Audit>,
    clock: SharedClock,
}

impl Backups {
    async fn run(&self, full: bool) -> Result<PathBuf, BackupError> {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (Some(directory), Some(recipient)) =
                (&this.config.backup.directory, &this.config.backup.recipient)
            else {
                return Err(BackupError::NoBackup(PathBuf::from(
                    "(no backup directory configured)",
                )));
            };
            backup::run(
                &this.store,
                &this.config.data_dir,
                &BackupPolicy {
                    directory,
                    recipient,
                    incrementals_per_full: this.config.backup.incrementals_per_full,
                    keep_full: this.config.backup.keep_full,
                },
                this.clock.now_ms(),
                full,
            )
        })
        .await
        .unwrap_or_else(|e| Err(BackupError::NoBackup(PathBuf::from(e.to_string()))));
        match &result {
            Ok(path) => self.audit.record(
                AuditKind::BackupWritten,
                Actor::APPLIANCE,
                format!("{}", path.display()),
            ),
            Err(e) => {
                tracing::error!(error = %e, "backup failed");
                self.audit
                    .record(AuditKind::BackupFailed, Actor::APPLIANCE, e.to_string());
            }
        }
        result
    }
}

impl Running {
    /// Takes a backup now (as the schedule would).
    pub async fn backup_now(&self, full: bool) -> Result<PathBuf, BackupError> {
        self.backups.run(full).await
    }

    /// The open store (tests write through it to check the durability boundary).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The relay's handle (diagnostics and tests).
    pub fn media(&self) -> &media::MediaHandle {
        &self.media
    }

    /// What the API's handlers work on: sessions, identities, the security log.
    pub fn api(&self) -> &Arc<ApiState> {
        &self.api
    }

    /// The router the HTTPS listener serves, for requests from inside the process (the
    /// fuzz targets): the same routes, access checks and handlers, without TLS. Requests
    /// carry their [`crate::http::ConnInfo`] as an extension, as the listener adds it.
    pub fn router(&self) -> axum::Router {
        api::router(self.api.clone())
    }

    /// Runs the retention sweep now (as the schedule would); returns deleted accounts.
    pub async fn retention_sweep(&self) -> Result<usize, crate::lifecycle::LifecycleError> {
        self.lifecycle.sweep().await
    }

    /// The appliance-level security log, oldest first.
    pub fn audit_entries(&self) -> Result<Vec<crate::audit::AuditEntry>, StoreError> {
        self.audit.entries()
    }

    /// Stops accepting, tells every open session, stops the relay and flushes the store.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        if let Some(notify) = &self.systemd {
            notify.send("STOPPING=1\nSTATUS=Shutting down");
        }
        self.live.shutdown();
        self.shutdown.begin();
        self.media.shutdown();
        for task in self.tasks {
            // The media-event task ends when the relay drops its sender; others on signal.
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
        let thread = self.media_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        self.store.close().await
    }
}

pub(crate) fn create_private_dir(path: &std::path::Path) -> Result<(), StartError> {
    let io = |source| StartError::DataDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)
}
