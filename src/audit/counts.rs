//! Running totals of the security-relevant entries, for `/metrics`: an operator alerts on
//! a rate (anomalies, guessing) without reading the log.

use std::sync::atomic::{AtomicU64, Ordering};

use super::AuditKind;

#[derive(Default)]
pub struct SecurityCounts {
    pub anomaly_alerts: AtomicU64,
    pub sources_throttled: AtomicU64,
    /// Wrong invitation tokens and PINs.
    pub guesses_rejected: AtomicU64,
    /// An invitation used from a device other than the one that joined.
    pub devices_refused: AtomicU64,
}

impl SecurityCounts {
    pub(super) fn note(&self, kind: &AuditKind) {
        let counter = match kind {
            AuditKind::AnomalyAlert => &self.anomaly_alerts,
            AuditKind::SourceThrottled => &self.sources_throttled,
            AuditKind::InvitationRejected | AuditKind::PinRejected => &self.guesses_rejected,
            AuditKind::InvitationDeviceRefused => &self.devices_refused,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
