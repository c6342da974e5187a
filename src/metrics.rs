//! Prometheus metrics and a health check on a separate plain-HTTP listener, meant for
//! loopback or a management network.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::live::Live;
use crate::media::MediaHandle;
use crate::store::Store;

#[derive(Clone)]
pub struct Metrics {
    pub firewall: crate::firewall::BlocklistClient,
    pub live: Arc<Live>,
    pub media: MediaHandle,
    pub auth: Arc<Auth>,
    pub store: Store,
}

impl Metrics {
    /// The metrics in Prometheus' text exposition format. `blocklist` is the firewall
    /// blocklist's size, when a firewall helper answered.
    pub fn render(&self, blocklist: Option<usize>) -> String {
        let media = self.media.stats();
        let counters = self.auth.counters();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        metric(
            "sightline_sessions_open",
            "gauge",
            "Support sessions with participants connected.",
            self.live.open_sessions() as u64,
        );
        metric(
            "sightline_media_peers",
            "gauge",
            "WebRTC peers held by the relay.",
            media.peers.load(Ordering::Relaxed),
        );
        metric(
            "sightline_media_frames_forwarded_total",
            "counter",
            "Media frames forwarded to technicians.",
            media.packets_forwarded.load(Ordering::Relaxed),
        );
        metric(
            "sightline_media_bytes_forwarded_total",
            "counter",
            "Media payload bytes forwarded to technicians.",
            media.bytes_forwarded.load(Ordering::Relaxed),
        );
        metric(
            "sightline_media_datagrams_dropped_total",
            "counter",
            "UDP datagrams dropped as unrecognised or for no known peer.",
            media.datagrams_dropped.load(Ordering::Relaxed),
        );
        metric(
            "sightline_media_loop_heartbeat_age_milliseconds",
            "gauge",
            "Time since the media loop last ran.",
            media.heartbeat_age().as_millis() as u64,
        );
        metric(
            "sightline_login_failures_total",
            "counter",
            "Failed sign-ins (password or second factor).",
            counters.login_failures.load(Ordering::Relaxed),
        );
        metric(
            "sightline_lockouts_total",
            "counter",
            "Sign-in lockouts started.",
            counters.lockouts.load(Ordering::Relaxed),
        );
        if let Some(size) = blocklist {
            metric(
                "sightline_blocklist_size",
                "gauge",
                "Sources in the firewall blocklist.",
                size as u64,
            );
        }
        metric(
            "sightline_store_size_bytes",
            "gauge",
            "Bytes the store uses on disk.",
            self.store.size_on_disk(),
        );
        out
    }
}

async fn metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    let firewall = metrics.firewall.clone();
    let blocklist = if firewall.is_configured() {
        tokio::task::spawn_blocking(move || firewall.blocklist_size().ok())
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(blocklist),
    )
}

pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: watch::Receiver<bool>) {
    let router = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(crate::appliance::stopped(shutdown))
        .await;
}
