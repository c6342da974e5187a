//! The appliance's background tasks, each started once by [`super::start_supervised`] and
//! ended by the shutdown (the media events' task ends when the relay drops its sender).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Backups;
use crate::audit::Audit;
use crate::auth::Auth;
use crate::firewall::BlocklistClient;
use crate::lifecycle::Lifecycle;
use crate::live::Live;
use crate::media::{MediaEvent, MediaHandle};
use crate::shutdown::Stopping;
use crate::systemd::SystemdNotify;

/// Hands the relay's events to the sessions; a flood of junk is a security alert, and a
/// peer that connected is exempt from the firewall's unknown-source limit for as long as
/// a session may last.
pub(super) async fn route_media_events(
    mut events: mpsc::UnboundedReceiver<MediaEvent>,
    live: Arc<Live>,
    audit: Arc<Audit>,
    firewall: BlocklistClient,
    max_session_secs: u64,
) {
    let peer_secs = u32::try_from(max_session_secs)
        .unwrap_or(86_400)
        .min(86_400);
    while let Some(event) = events.recv().await {
        match event {
            MediaEvent::MalformedFlood { source } => {
                audit.alert(source, "burst of malformed or unsolicited media datagrams");
            }
            MediaEvent::Connected {
                source: Some(source),
                ..
            } if firewall.is_configured() => {
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
}

/// Every 5 s: sessions past their time end, expired invitations and login sessions go.
pub(super) async fn sweep_sessions(live: Arc<Live>, auth: Arc<Auth>, stopping: Stopping) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                live.sweep();
                auth.sweep();
            }
            () = stopping.wait() => return,
        }
    }
}

/// Serves a new imported certificate (or the appliance CA's again) when its files change
/// — checked every two seconds — or at once on SIGHUP (`systemctl reload`). A certificate
/// that does not check out leaves the served one in place.
pub(super) async fn watch_certificates(
    certificates: Arc<crate::tls::Certificates>,
    stopping: Stopping,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let asked = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            () = stopping.wait() => return,
        };
        if !asked && !certificates.files_changed() {
            continue;
        }
        let certs = certificates.clone();
        match tokio::task::spawn_blocking(move || certs.reload()).await {
            Ok(Ok(Some(info))) => {
                tracing::info!(subject = %info.subject, not_after = %crate::clock::rfc3339(info.not_after_ms), "serving the imported certificate")
            }
            Ok(Ok(None)) => tracing::info!("serving the appliance CA's certificate"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the imported certificate is refused; the served one stays")
            }
            Err(e) => tracing::error!(error = %e, "reloading the certificate failed"),
        }
    }
}

/// Every minute: the retention rules (records past their time, accounts due for deletion).
pub(super) async fn sweep_retention(lifecycle: Arc<Lifecycle>, stopping: Stopping) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = lifecycle.sweep().await {
                    tracing::error!(error = %e, "retention sweep failed");
                }
            }
            () = stopping.wait() => return,
        }
    }
}

/// A backup every `every`, the first one interval after start.
pub(super) async fn scheduled_backups(backups: Backups, every: Duration, stopping: Stopping) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => { let _ = backups.run(false).await; }
            () = stopping.wait() => return,
        }
    }
}

/// Feeds the systemd watchdog from the HTTP runtime, but only while the media loop is
/// turning too: a stalled relay (or a stalled runtime) stops the feeding and systemd
/// restarts the service.
pub(super) async fn feed_watchdog(
    notify: SystemdNotify,
    period: Duration,
    media: MediaHandle,
    stopping: Stopping,
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
            () = stopping.wait() => return,
        }
    }
}
