//! What a support session is: its states, the consent receipt, the stored record, the
//! view participants see, and the history's filter.

use serde::{Deserialize, Serialize};

use super::ChatLine;
use super::toolkit::{Colleague, ColleagueRole, ConsentChange, ConsentEvent, Recording, Still};
use crate::clock::UnixMillis;
use crate::ids::{AccountId, SessionId, UserId};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Created; the customer has not opened the invitation yet.
    Waiting,
    /// The customer opened the invitation and is deciding.
    Joined,
    /// The customer agreed to share the camera; media is connecting.
    Consented,
    /// Video from the customer reaches the relay.
    Live,
    /// The customer declined to share the camera.
    Declined,
    Ended,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Technician,
    Customer,
    Expired,
    Shutdown,
}

/// What the customer agreed to, and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ConsentReceipt {
    pub camera: bool,
    pub microphone: bool,
    /// Recording is a separate, explicit choice, offered only where the account allows it.
    #[serde(default)]
    pub recording: bool,
    pub at_ms: UnixMillis,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SupportSession {
    pub id: SessionId,
    pub account_id: AccountId,
    pub technician_id: UserId,
    pub technician_name: String,
    pub organisation: String,
    /// What the technician noted to find the customer again (ticket, name, device).
    #[serde(default)]
    pub customer_reference: Option<String>,
    /// The technician's groups when the session started; group members who may see the
    /// group's history see it.
    #[serde(default)]
    pub group_ids: Vec<String>,
    pub created_ms: UnixMillis,
    pub invitation_expires_ms: UnixMillis,
    pub ends_by_ms: UnixMillis,
    pub state: SessionState,
    pub consent: Option<ConsentReceipt>,
    pub paused: bool,
    pub joined_ms: Option<UnixMillis>,
    pub ended_ms: Option<UnixMillis>,
    pub end_reason: Option<EndReason>,
    /// The account's policy when the session was created.
    #[serde(default)]
    pub recording_allowed: bool,
    #[serde(default)]
    pub colleagues: Vec<Colleague>,
    /// Every consent decision, in order: the consent receipt of the session record.
    #[serde(default)]
    pub consent_log: Vec<ConsentEvent>,
    /// The customer's browser and system, briefly ("Chrome 156 on Android").
    #[serde(default)]
    pub customer_device: Option<String>,
    /// The SHA-256 of the secret the customer's device was given when it joined. The
    /// invitation token alone only lets a device join; media, stills and rejoining need
    /// this secret too, so a forwarded link cannot take over the customer's camera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
    #[serde(default)]
    pub stills: Vec<Still>,
    #[serde(default)]
    pub recordings: Vec<Recording>,
}

impl SupportSession {
    pub(super) fn customer_devices(&self) -> u32 {
        let changes = self
            .consent_log
            .iter()
            .filter(|e| e.event == ConsentChange::NewDevice)
            .count();
        u32::from(self.device_key.is_some()) + u32::try_from(changes).unwrap_or(u32::MAX)
    }

    /// Whether this user takes part as a mere observer.
    pub(super) fn observed_by(&self, user_id: &UserId) -> bool {
        self.colleagues
            .iter()
            .any(|c| c.user_id == user_id && c.role == ColleagueRole::Observer)
    }
}

/// What the room (not the store) knows about a session, for its view.
#[derive(Default)]
pub(super) struct RoomFacts {
    pub(super) customer_connected: bool,
    pub(super) recording: bool,
    pub(super) frozen: Option<String>,
}

impl SessionView {
    pub(super) fn of(session: &SupportSession, facts: RoomFacts) -> Self {
        Self {
            id: session.id.clone(),
            state: session.state,
            technician_id: session.technician_id.clone(),
            technician_name: session.technician_name.clone(),
            organisation: session.organisation.clone(),
            customer_reference: session.customer_reference.clone(),
            customer_connected: facts.customer_connected,
            consent: session.consent.clone(),
            paused: session.paused,
            created_ms: session.created_ms,
            invitation_expires_ms: session.invitation_expires_ms,
            end_reason: session.end_reason,
            recording_allowed: session.recording_allowed,
            recording: facts.recording,
            frozen: facts.frozen,
            colleagues: session.colleagues.clone(),
            customer_device: session.customer_device.clone(),
            customer_devices: session.customer_devices(),
        }
    }
}

/// Everything kept about a session, for its record page.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SessionRecord {
    #[serde(flatten)]
    pub session: SupportSession,
    pub duration_secs: Option<u64>,
    pub transcript: Vec<ChatLine>,
}

/// Filters for the session history (all optional).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    pub technician_id: Option<UserId>,
    pub state: Option<SessionState>,
    pub customer_reference: Option<String>,
    /// Sessions created at or after this time.
    pub since_ms: Option<UnixMillis>,
    /// Sessions created before this time.
    pub until_ms: Option<UnixMillis>,
    pub limit: Option<usize>,
}

impl SessionFilter {
    pub(super) fn matches(&self, s: &SupportSession) -> bool {
        self.technician_id
            .as_ref()
            .is_none_or(|t| *t == s.technician_id)
            && self.state.is_none_or(|st| st == s.state)
            && self
                .customer_reference
                .as_ref()
                .is_none_or(|r| s.customer_reference.as_ref() == Some(r))
            && self.since_ms.is_none_or(|t| s.created_ms >= t)
            && self.until_ms.is_none_or(|t| s.created_ms < t)
    }
}

/// What participants see of a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct SessionView {
    pub id: SessionId,
    pub state: SessionState,
    pub technician_id: UserId,
    pub technician_name: String,
    pub organisation: String,
    pub customer_reference: Option<String>,
    pub customer_connected: bool,
    pub consent: Option<ConsentReceipt>,
    pub paused: bool,
    pub created_ms: UnixMillis,
    pub invitation_expires_ms: UnixMillis,
    pub end_reason: Option<EndReason>,
    pub recording_allowed: bool,
    /// A recording is running now.
    pub recording: bool,
    /// While the technician has frozen the picture: the still both sides look at.
    pub frozen: Option<String>,
    pub colleagues: Vec<Colleague>,
    /// The customer's browser and system, as described at join.
    pub customer_device: Option<String>,
    /// How many devices have joined with this invitation: more than one means another
    /// device took over (and had to consent afresh).
    pub customer_devices: u32,
}

/// What the customer's page proves itself with after it joined: the invitation token and
/// the device secret the appliance gave it at join.
#[derive(Debug, Clone)]
pub struct CustomerProof {
    pub token: String,
    pub device: Option<String>,
}

/// A freshly created session with the secrets the technician passes on. The token and
/// PIN are shown once; only their hashes (token) or a short-lived index (PIN) are kept.
#[derive(Debug, Clone, Serialize)]
pub struct NewInvitation {
    pub session: SessionView,
    pub token: String,
    pub pin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct InvitationRef {
    pub(super) account_id: AccountId,
    pub(super) session_id: SessionId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PinEntry {
    pub(super) account_id: AccountId,
    pub(super) session_id: SessionId,
    pub(super) expires_ms: UnixMillis,
}
