//! What an entry of the security log says: its kind, who it is about, and the hash that
//! chains it to the one before.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
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
    /// The invitation token used for media or stills by a device other than the one that
    /// joined (a forwarded or stolen link).
    InvitationDeviceRefused,
    /// A different device joined with the invitation while the first was away.
    CustomerDeviceChanged,
    PinRejected,
    /// An invitation link sent by e-mail or SMS; the recipient appears as a pseudonym.
    InvitationSent,
    /// The relay or gateway did not take an invitation.
    InvitationNotSent,
    SourceThrottled,
    ConsentGiven,
    ConsentDeclined,
    RecordingStarted,
    RecordingStored,
    /// A still uploaded that no technician asked for, or that is not an image.
    UnexpectedUpload,
    ColleagueInvited,
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
    /// An anomaly rule fired; the source was sent to the firewall blocklist.
    AnomalyAlert,
    /// Entries past the log's retention period were removed; the detail names where the
    /// kept log continues (see [`Checkpoint`]).
    AuditLogTrimmed,
}

impl AuditKind {
    /// Requests about a customer's data: exports, deletion requests and the deletions
    /// they led to — the trail the console's data page shows.
    pub fn is_data_request(&self) -> bool {
        matches!(
            self,
            Self::DataExported | Self::DeletionRequested | Self::ContentDeleted
        )
    }

    /// Identity events: what the account admin's identity log shows.
    pub fn is_identity(&self) -> bool {
        !matches!(
            self,
            Self::SessionCreated
                | Self::SessionEnded
                | Self::InvitationRejected
                | Self::InvitationDeviceRefused
                | Self::CustomerDeviceChanged
                | Self::PinRejected
                | Self::InvitationSent
                | Self::InvitationNotSent
                | Self::ConsentGiven
                | Self::ConsentDeclined
                | Self::RecordingStarted
                | Self::RecordingStored
                | Self::UnexpectedUpload
                | Self::ColleagueInvited
                | Self::MalformedSignaling
                | Self::MalformedMediaOffer
                | Self::DataExported
                | Self::DeletionRequested
                | Self::ContentDeleted
                | Self::AccountDeleted
                | Self::BackupWritten
                | Self::BackupFailed
                | Self::AnomalyAlert
                | Self::AuditLogTrimmed
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: UnixMillis,
    pub kind: AuditKind,
    pub account_id: Option<String>,
    pub actor: Option<String>,
    pub source: Option<IpAddr>,
    /// Short, non-secret context; never a password, token or PIN.
    pub detail: String,
    /// The previous entry's hash (zeros for the first): entries form a chain, so a
    /// changed, removed or reordered entry is detectable (`sightline audit verify`).
    #[serde(default)]
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
}

impl AuditEntry {
    pub(super) fn compute_hash(&self) -> String {
        let content = serde_json::json!([
            self.seq,
            self.at_ms,
            self.kind,
            self.account_id,
            self.actor,
            self.source,
            self.detail,
            self.prev_hash,
        ]);
        crate::ids::sha256_hex(content.to_string().as_bytes())
    }
}

/// Who an entry is about, each part only when known: the account it belongs to, the user
/// who acted, and the address the request came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Actor<'a> {
    pub account_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub source: Option<IpAddr>,
}

impl<'a> Actor<'a> {
    /// The appliance itself: a schedule, start-up, maintenance.
    pub const APPLIANCE: Actor<'static> = Actor {
        account_id: None,
        user_id: None,
        source: None,
    };

    /// Someone not known (yet) at an address.
    pub fn stranger(source: IpAddr) -> Self {
        Self::APPLIANCE.at(source)
    }

    /// An account, and nobody in it in particular: a customer, a rule, a schedule.
    pub fn account(account_id: &'a str) -> Self {
        Self {
            account_id: Some(account_id),
            ..Self::APPLIANCE
        }
    }

    /// A user of an account.
    pub fn user(account_id: &'a str, user_id: &'a str) -> Self {
        Self {
            account_id: Some(account_id),
            user_id: Some(user_id),
            source: None,
        }
    }

    /// The same actor, acting from `source`.
    pub fn at(self, source: IpAddr) -> Self {
        Self {
            source: Some(source),
            ..self
        }
    }
}
