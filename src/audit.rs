//! The security log and the counters that notice guessing.
//!
//! Every security-relevant event is written to the store (appliance-level log) and to the
//! `sightline::audit` tracing target. Hash chaining, per-account logs, SIEM forwarding and
//! the firewall feed build on this later.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock::{SharedClock, UnixMillis};
use crate::store::{Collection, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    SetupCompleted,
    SetupCodeRejected,
    LoginSucceeded,
    LoginFailed,
    Logout,
    SessionCreated,
    SessionEnded,
    InvitationRejected,
    PinRejected,
    SourceThrottled,
    ConsentGiven,
    ConsentDeclined,
    MalformedSignaling,
    MalformedMediaOffer,
    AccessDenied,
    AccountCreated,
    LoginLocked,
    LockoutEnded,
    SecondFactorFailed,
    RecoveryCodeUsed,
    TwoFactorEnrolled,
    TwoFactorReset,
    PasswordChanged,
    PasswordChangeFailed,
    PasswordReset,
    SignedOutEverywhere,
    UserCreated,
    UserUpdated,
    UserDeleted,
    GroupChanged,
    AccountSettingsChanged,
    DataExported,
    DeletionRequested,
    ContentDeleted,
    AccountDeleted,
    BackupWritten,
    BackupFailed,
}

impl AuditKind {
    /// Identity events: what the account admin's identity log shows.
    pub fn is_identity(&self) -> bool {
        !matches!(
            self,
            Self::SessionCreated
                | Self::SessionEnded
                | Self::InvitationRejected
                | Self::PinRejected
                | Self::ConsentGiven
                | Self::ConsentDeclined
                | Self::MalformedSignaling
                | Self::MalformedMediaOffer
                | Self::DataExported
                | Self::DeletionRequested
                | Self::ContentDeleted
                | Self::AccountDeleted
                | Self::BackupWritten
                | Self::BackupFailed
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: UnixMillis,
    pub kind: AuditKind,
    pub account_id: Option<String>,
    pub actor: Option<String>,
    pub source: Option<IpAddr>,
    /// Short, non-secret context; never a password, token or PIN.
    pub detail: String,
}

pub struct Audit {
    log: Collection<AuditEntry>,
    clock: SharedClock,
    next_seq: Mutex<u64>,
}

impl Audit {
    pub fn open(store: &Store, clock: SharedClock) -> Result<Self, StoreError> {
        let log = store.global::<AuditEntry>("audit")?;
        let next_seq = log.values()?.iter().map(|e| e.seq + 1).max().unwrap_or(0);
        Ok(Self {
            log,
            clock,
            next_seq: Mutex::new(next_seq),
        })
    }

    pub fn record(
        &self,
        kind: AuditKind,
        account_id: Option<&str>,
        actor: Option<&str>,
        source: Option<IpAddr>,
        detail: impl Into<String>,
    ) {
        let detail = detail.into();
        let mut seq_guard = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        let entry = AuditEntry {
            seq: *seq_guard,
            at_ms: self.clock.now_ms(),
            kind,
            account_id: account_id.map(str::to_owned),
            actor: actor.map(str::to_owned),
            source,
            detail,
        };
        *seq_guard += 1;
        // Zero-padded so the store's key order is the log's order.
        let key = format!("{:016}", entry.seq);
        tracing::info!(
            target: "sightline::audit",
            kind = ?entry.kind,
            account_id = entry.account_id.as_deref(),
            actor = entry.actor.as_deref(),
            source = ?entry.source,
            detail = %entry.detail,
        );
        if let Err(e) = self.log.put(&key, &entry) {
            tracing::error!(error = %e, "audit entry could not be stored");
        }
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = self.log.values()?;
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }
}

/// Counts failures (wrong PINs, setup codes, links) per source within a sliding minute
/// and tells when a source has used up its allowance.
pub struct GuessThrottle {
    limit: u32,
    clock: SharedClock,
    failures: Mutex<HashMap<IpAddr, Vec<UnixMillis>>>,
}

const WINDOW_MS: u64 = 60_000;
/// A source that hit the limit waits this long after its last failure.
const PENALTY_MS: u64 = 5 * 60_000;

impl GuessThrottle {
    pub fn new(limit_per_minute: u32, clock: SharedClock) -> Self {
        Self {
            limit: limit_per_minute,
            clock,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this source may try now.
    pub fn allows(&self, source: IpAddr) -> bool {
        let now = self.clock.now_ms();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = map.get_mut(&source) else {
            return true;
        };
        let blocked = times.len() as u32 >= self.limit
            && times.last().is_some_and(|last| now < last + PENALTY_MS);
        if !blocked {
            times.retain(|t| now < t + WINDOW_MS);
            if times.is_empty() {
                map.remove(&source);
            }
        }
        !blocked
    }

    /// Records a failure; returns true when this failure used up the allowance.
    pub fn fail(&self, source: IpAddr) -> bool {
        let now = self.clock.now_ms();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a flood from many sources.
        if map.len() > 100_000 {
            map.retain(|_, times| times.last().is_some_and(|t| now < t + PENALTY_MS));
        }
        let times = map.entry(source).or_default();
        times.retain(|t| now < t + WINDOW_MS);
        times.push(now);
        times.len() as u32 == self.limit
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn throttle_blocks_at_the_limit_and_releases_after_the_penalty() {
        let clock = ManualClock::new(1_000_000);
        let throttle = GuessThrottle::new(3, Arc::new(clock.clone()));
        let ip: IpAddr = "198.18.0.7".parse().expect("ip");
        assert!(!throttle.fail(ip));
        assert!(!throttle.fail(ip));
        assert!(throttle.allows(ip));
        assert!(throttle.fail(ip));
        assert!(!throttle.allows(ip));
        let other: IpAddr = "198.18.0.8".parse().expect("ip");
        assert!(throttle.allows(other));
        clock.advance_secs(299);
        assert!(!throttle.allows(ip));
        clock.advance_secs(1);
        assert!(throttle.allows(ip));
    }
}
