//! The audit log's copy to a SIEM: every entry as an RFC 5424 message over UDP.

use std::net::SocketAddr;

use super::{AuditEntry, AuditKind};

pub(super) struct Syslog {
    pub(super) socket: std::net::UdpSocket,
    pub(super) collector: SocketAddr,
    pub(super) host: String,
}

impl Syslog {
    /// One RFC 5424 message: facility authpriv, severity warning for alerts and failures,
    /// notice otherwise; the structured entry as JSON after the header.
    pub(super) fn send(&self, entry: &AuditEntry) {
        let severity = match entry.kind {
            AuditKind::AnomalyAlert
            | AuditKind::LoginLocked
            | AuditKind::SourceThrottled
            | AuditKind::AccessDenied
            | AuditKind::BackupFailed => 4,
            _ => 5,
        };
        let priority = 10 * 8 + severity;
        let timestamp =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(entry.at_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| "-".into());
        let kind = serde_json::to_value(&entry.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let json = serde_json::to_string(entry).unwrap_or_default();
        let line = format!(
            "<{priority}>1 {timestamp} {} sightline {} {kind} - {json}",
            self.host,
            std::process::id()
        );
        // Best effort, never blocking the caller: UDP syslog may drop like the network.
        let _ = self.socket.send_to(line.as_bytes(), self.collector);
    }
}
