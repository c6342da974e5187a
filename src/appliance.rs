//! Wiring and lifecycle: opens the store, prepares TLS, binds the listeners, starts the
//! relay and the HTTPS server, and shuts everything down in order.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::audit::AuditKind;
use crate::audit::{Audit, GuessThrottle};
use crate::auth::{Auth, AuthError};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::live::Live;
use crate::media;
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
    media: media::MediaHandle,
    media_thread: std::thread::JoinHandle<()>,
    shutdown: watch::Sender<bool>,
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

pub async fn start(config: Config, clock: SharedClock) -> Result<Running, StartError> {
    let data_dir = config.data_dir.clone();
    create_private_dir(&data_dir)?;
    let store = Store::open_data_dir(&data_dir, config.store.cache_bytes())?;
    let Core {
        audit,
        throttle,
        auth,
    } = Core::open(&store, &config, clock.clone())?;
    if let Some(collector) = config.audit.syslog_udp {
        audit
            .set_syslog(collector)
            .map_err(|source| StartError::Syslog { collector, source })?;
    }

    let mut names = tls::default_names(&config.http.server_names);
    if let Some(ip) = config.media.public_address {
        names.push(ip.to_string());
    }
    let tls = tls::load_or_create(&store, &data_dir, &names)?;
    if !tls.refused_names.is_empty() {
        tracing::warn!(
            names = ?tls.refused_names,
            "the appliance CA's name constraints do not permit these names; they are left out of the server certificate"
        );
    }

    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| StartError::BindHttps {
            addr: config.http.listen,
            source,
        })?;
    let https_addr = listener
        .local_addr()
        .map_err(|source| StartError::BindHttps {
            addr: config.http.listen,
            source,
        })?;
    let udp = media::bind(config.media.listen, config.media.workers).map_err(|source| {
        StartError::BindMedia {
            addr: config.media.listen,
            source,
        }
    })?;
    let (media, mut media_events, media_thread) = media::start(
        udp,
        Some(config.media.public_tcp_port.unwrap_or(https_addr.port())),
        config.firewall.malformed_datagrams_per_minute,
        Duration::from_secs(config.media.reconnect_grace_secs),
    )
    .map_err(StartError::Media)?;
    audit.set_blocklist(
        crate::firewall::BlocklistClient::new(config.firewall.helper_socket.clone()),
        config.firewall.block_secs,
    );
    let media_addr = media.local_addr();

    let live = Arc::new(Live::new(
        &store,
        clock.clone(),
        audit.clone(),
        throttle,
        media.clone(),
        config.sessions.clone(),
    )?);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    {
        let live = live.clone();
        let audit = audit.clone();
        let firewall = crate::firewall::BlocklistClient::new(config.firewall.helper_socket.clone());
        let peer_secs = u32::try_from(config.sessions.max_duration_secs)
            .unwrap_or(86_400)
            .min(86_400);
        tasks.push(tokio::spawn(async move {
            while let Some(event) = media_events.recv().await {
                match event {
                    media::MediaEvent::MalformedFlood { source } => {
                        audit.alert(source, "burst of malformed or unsolicited media datagrams");
                    }
                    media::MediaEvent::Connected {
                        source: Some(source),
                        ..
                    } if firewall.is_configured() => {
                        // Known peers are exempt from the firewall's unknown-source limit.
                        let firewall = firewall.clone();
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = firewall.allow_media(source.ip().to_canonical(), peer_secs) {
                                tracing::warn!(error = %e, "cannot mark media peer in the firewall");
                            }
                        });
                        live.on_media_event(event);
                    }
                    other => live.on_media_event(other),
                }
            }
        }));
    }
    {
        let live = live.clone();
        let auth = auth.clone();
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        live.sweep();
                        auth.sweep();
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }));
    }
    let lifecycle = Arc::new(Lifecycle::new(
        store.clone(),
        auth.clone(),
        live.clone(),
        audit.clone(),
        clock.clone(),
        config.retention.clone(),
        config.backup.clone(),
    ));
    {
        let lifecycle = lifecycle.clone();
        let stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = lifecycle.sweep().await {
                            tracing::error!(error = %e, "retention sweep failed");
                        }
                    }
                    () = stopped(stop.clone()) => return,
                }
            }
        }));
    }
    if config.backup.directory.is_some() {
        let backups = Backups {
            store: store.clone(),
            config: config.clone(),
            audit: audit.clone(),
            clock: clock.clone(),
        };
        let stop = shutdown_rx.clone();
        let every = Duration::from_secs(config.backup.interval_hours * 3600);
        tasks.push(tokio::spawn(async move {
            // The first scheduled backup comes one interval after start.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = backups.run(false).await; }
                    () = stopped(stop.clone()) => return,
                }
            }
        }));
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
        shutdown: shutdown_rx.clone(),
    });
    tasks.push(tokio::spawn(crate::http::serve(
        listener,
        media.clone(),
        tls.server_config,
        api::router(state),
        shutdown_rx.clone(),
    )));

    let mut metrics_addr = None;
    if let Some(listen) = config.metrics.listen {
        let bind_error = |source| StartError::BindMetrics {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        metrics_addr = Some(listener.local_addr().map_err(bind_error)?);
        let metrics = crate::metrics::Metrics {
            firewall: crate::firewall::BlocklistClient::new(config.firewall.helper_socket.clone()),
            live: live.clone(),
            media: media.clone(),
            auth: auth.clone(),
            audit: audit.clone(),
            store: store.clone(),
        };
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            metrics,
            shutdown_rx.clone(),
        )));
    }

    let setup_code = auth.issue_setup_code()?;
    let console_url = match &config.http.public_url {
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
    };
    // Every listener is bound and the store is open: tell systemd (no-op without it).
    if let Some(notify) = &config.systemd {
        notify.send(&format!("READY=1\nSTATUS=Console: {console_url}"));
        if let Some(period) = notify.watchdog {
            tasks.push(tokio::spawn(feed_watchdog(
                notify.clone(),
                period,
                media.clone(),
                shutdown_rx.clone(),
            )));
        }
    }
    Ok(Running {
        https_addr,
        media_addr,
        metrics_addr,
        systemd: config.systemd.clone(),
        setup_code,
        ca_pem: tls.ca_pem,
        console_url,
        data_dir,
        store: store.clone(),
        audit: audit.clone(),
        lifecycle,
        backups: Backups {
            store,
            config,
            audit,
            clock,
        },
        live,
        media,
        media_thread,
        shutdown,
        tasks,
    })
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
                None,
                None,
                None,
                format!("{}", path.display()),
            ),
            Err(e) => {
                tracing::error!(error = %e, "backup failed");
                self.audit
                    .record(AuditKind::BackupFailed, None, None, None, e.to_string());
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

    /// The relay's handle (diagnostics and tests).
    /// The open store (tests write through it to check the durability boundary).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn media(&self) -> &media::MediaHandle {
        &self.media
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
        let _ = self.shutdown.send(true);
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

fn create_private_dir(path: &std::path::Path) -> Result<(), StartError> {
    let io = |source| StartError::DataDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Feeds the systemd watchdog from the HTTP runtime, but only while the media loop is
/// turning too: a stalled relay (or a stalled runtime) stops the feeding and systemd
/// restarts the service.
async fn feed_watchdog(
    notify: SystemdNotify,
    period: Duration,
    media: media::MediaHandle,
    shutdown: watch::Receiver<bool>,
) {
    let half = period / 2;
    let mut tick = tokio::time::interval(half);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let age = media.stats().heartbeat_age();
                if age < half {
                    notify.send("WATCHDOG=1");
                } else {
                    tracing::error!(stalled_ms = age.as_millis() as u64, "media loop stalled; not feeding the watchdog");
                }
            }
            () = stopped(shutdown.clone()) => return,
        }
    }
}

/// Resolves when the appliance starts shutting down.
pub async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
