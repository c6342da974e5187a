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

use crate::auth::Auth;
use crate::live::Live;
use crate::media::MediaHandle;
use crate::shutdown::Stopping;
use crate::store::Store;

#[derive(Clone)]
pub struct Metrics {
    pub firewall: crate::firewall::BlocklistClient,
    pub live: Arc<Live>,
    pub media: MediaHandle,
    pub auth: Arc<Auth>,
    pub audit: Arc<crate::audit::Audit>,
    pub store: Store,
    pub certificates: Arc<crate::tls::Certificates>,
}

impl Metrics {
    /// The metrics in Prometheus' text exposition format. `blocklist` is the firewall
    /// blocklist's size, when a firewall helper answered.
    pub fn render(&self, blocklist: Option<usize>) -> String {
        const GAUGE: &str = "gauge";
        const COUNTER: &str = "counter";
        let media = self.media.stats();
        let auth = self.auth.counters();
        let security = &self.audit.counts;
        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        let certificate = self.certificates.info();
        #[rustfmt::skip]
        let rows: [(&str, &str, &str, Option<u64>); 23] = [
            ("sightline_sessions_open", GAUGE, "Support sessions with participants connected.", Some(self.live.open_sessions() as u64)),
            ("sightline_media_peers", GAUGE, "WebRTC peers held by the relay.", Some(load(&media.peers))),
            ("sightline_media_frames_forwarded_total", COUNTER, "Media frames forwarded between participants.", Some(load(&media.packets_forwarded))),
            ("sightline_media_bytes_forwarded_total", COUNTER, "Media payload bytes forwarded between participants.", Some(load(&media.bytes_forwarded))),
            ("sightline_media_datagrams_sent_total", COUNTER, "Datagrams the media relay sent (media, RTCP, ICE, DTLS; ICE-TCP frames included).", Some(load(&media.datagrams_sent))),
            ("sightline_media_packets_sent_total", COUNTER, "RTP media packets the relay sent (audio and video, retransmissions included).", Some(load(&media.media_packets_sent))),
            ("sightline_media_padding_sent_total", COUNTER, "RTP padding packets the relay sent (bandwidth probing and fill).", Some(load(&media.padding_packets_sent))),
            ("sightline_media_datagrams_handed_over_total", COUNTER, "Datagrams that reached one relay worker's socket and were passed to the worker owning their peer.", Some(load(&media.datagrams_handed_over))),
            ("sightline_media_datagrams_dropped_total", COUNTER, "UDP datagrams dropped as unrecognised or for no known peer.", Some(load(&media.datagrams_dropped))),
            ("sightline_media_tcp_connections", GAUGE, "ICE-TCP connections on the HTTPS port.", Some(load(&media.tcp_connections))),
            ("sightline_https_connections_rejected_total", COUNTER, "Connections to the HTTPS port that were neither TLS nor ICE-TCP in time.", Some(load(&media.tcp_rejected))),
            ("sightline_media_loop_heartbeat_age_milliseconds", GAUGE, "Time since the media loop last ran.", Some(media.heartbeat_age().as_millis() as u64)),
            ("sightline_login_failures_total", COUNTER, "Failed sign-ins (wrong email or password).", Some(load(&auth.login_failures))),
            ("sightline_lockouts_total", COUNTER, "Sign-in lockouts started.", Some(load(&auth.lockouts))),
            ("sightline_anomaly_alerts_total", COUNTER, "Anomaly rules that fired (each asks the firewall to blocklist a source).", Some(load(&security.anomaly_alerts))),
            ("sightline_sources_throttled_total", COUNTER, "Sources that used up their guessing allowance.", Some(load(&security.sources_throttled))),
            ("sightline_guesses_rejected_total", COUNTER, "Wrong invitation tokens and PINs.", Some(load(&security.guesses_rejected))),
            ("sightline_invitation_devices_refused_total", COUNTER, "Invitations used from a device other than the one that joined.", Some(load(&security.devices_refused))),
            ("sightline_blocklist_size", GAUGE, "Sources in the firewall blocklist.", blocklist.map(|n| n as u64)),
            ("sightline_store_size_bytes", GAUGE, "Bytes the store uses on disk.", Some(self.store.size_on_disk())),
            ("sightline_tls_certificate_expiry_timestamp_seconds", GAUGE, "When the served certificate (or the appliance CA behind it) expires, Unix seconds.", certificate.as_ref().map(|c| c.not_after_ms / 1000)),
            ("sightline_tls_certificate_imported", GAUGE, "1 while an imported certificate is served, 0 for the appliance CA's.", certificate.as_ref().map(|c| u64::from(c.source == "imported"))),
            ("sightline_tls_reload_failures_total", COUNTER, "Imported certificates refused when the files changed or on SIGHUP.", Some(load(&self.certificates.reload_failures))),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            // A metric without a value (no firewall helper) is left out, not reported as 0.
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        }
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

pub async fn serve(listener: TcpListener, metrics: Metrics, stopping: Stopping) {
    let router = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stopping.wait().await })
        .await;
}
