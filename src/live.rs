//! Support sessions: the invitation (link token and PIN), the room each live session
//! occupies, its state machine, and the signaling protocol spoken over the WebSocket.
//!
//! A session is created by a technician in the `Waiting` state with an invitation. The
//! customer opens the link (or types the PIN) and joins; nothing is shared until the
//! customer consents to the camera. The customer's page then publishes its camera to the
//! relay, the technicians' consoles receive it, and the session is `Live` once video
//! reaches the relay. Either side may end it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::audit::{Audit, AuditKind, GuessThrottle};
use crate::auth::{Principal, Role, random_id, random_token, sha256_hex};
use crate::clock::{SharedClock, UnixMillis};
use crate::config::SessionConfig;
use crate::media::{MediaError, MediaEvent, MediaHandle, PeerId, PeerRole};
use crate::store::{Collection, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no such support session")]
    NotFound,
    #[error("this invitation is not valid: it is wrong, has expired or its session has ended")]
    InvitationInvalid,
    #[error("that PIN is not valid")]
    PinInvalid,
    #[error("too many attempts from this address; try again in a few minutes")]
    Throttled,
    #[error("another device has already joined this session")]
    AlreadyJoined,
    #[error("the customer has not agreed to share the camera")]
    NoConsent,
    #[error("the session has ended")]
    Ended,
    #[error("{0}")]
    BadMessage(String),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Technician,
    Customer,
    Expired,
    Shutdown,
}

/// What the customer agreed to, and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsentReceipt {
    pub camera: bool,
    pub microphone: bool,
    pub at_ms: UnixMillis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupportSession {
    pub id: String,
    pub account_id: String,
    pub technician_id: String,
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
}

impl SessionView {
    fn of(session: &SupportSession, customer_connected: bool) -> Self {
        Self {
            id: session.id.clone(),
            state: session.state,
            technician_name: session.technician_name.clone(),
            organisation: session.organisation.clone(),
            customer_reference: session.customer_reference.clone(),
            customer_connected,
            consent: session.consent.clone(),
            paused: session.paused,
            created_ms: session.created_ms,
            invitation_expires_ms: session.invitation_expires_ms,
            end_reason: session.end_reason,
        }
    }
}

/// Filters for the session history (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    pub technician_id: Option<String>,
    pub state: Option<SessionState>,
    pub customer_reference: Option<String>,
    /// Sessions created at or after this time.
    pub since_ms: Option<UnixMillis>,
    /// Sessions created before this time.
    pub until_ms: Option<UnixMillis>,
    pub limit: Option<usize>,
}

impl SessionFilter {
    fn matches(&self, s: &SupportSession) -> bool {
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub state: SessionState,
    pub technician_name: String,
    pub organisation: String,
    pub customer_reference: Option<String>,
    pub customer_connected: bool,
    pub consent: Option<ConsentReceipt>,
    pub paused: bool,
    pub created_ms: UnixMillis,
    pub invitation_expires_ms: UnixMillis,
    pub end_reason: Option<EndReason>,
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
struct InvitationRef {
    account_id: String,
    session_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PinEntry {
    account_id: String,
    session_id: String,
    expires_ms: UnixMillis,
}

/// Messages a participant sends over the signaling WebSocket.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on a technician's socket: which session to follow.
    Watch {
        session_id: String,
    },
    /// First message on a customer's socket: the invitation token, and a random id the
    /// page keeps for the browser tab so that a reload can take its own place again.
    Join {
        token: String,
        #[serde(default)]
        device: Option<String>,
    },
    /// The customer's choice; the microphone is asked for separately and may be declined.
    Consent {
        camera: bool,
        microphone: bool,
    },
    /// The customer paused or resumed the camera.
    Pause {
        paused: bool,
    },
    /// Either side ends the session.
    End,
    /// A chat line; stored with the session.
    Chat {
        text: String,
    },
    Ping,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    Unexpected,
    NotAllowed,
    InvitationInvalid,
    NotFound,
    AlreadyJoined,
    Throttled,
    Internal,
}

/// Messages the appliance sends over the signaling WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The session as it is now; sent on join and on every change.
    State {
        session: SessionView,
    },
    Ended {
        reason: EndReason,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// A new chat line, to everyone in the session (the sender included).
    Chat {
        line: ChatLine,
    },
    /// The chat so far, sent once when a participant joins.
    Transcript {
        lines: Vec<ChatLine>,
    },
    Pong,
}

/// Who wrote a chat line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Technician,
    Customer,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatLine {
    pub at_ms: UnixMillis,
    pub from: Speaker,
    /// The technician's display name, or "Customer".
    pub author: String,
    pub text: String,
}

const MAX_CHAT_CHARS: usize = 2000;

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Participant {
    Technician,
    Customer,
}

/// One participant's signaling connection to a session.
pub struct Attachment {
    pub conn_id: u64,
    pub session_id: String,
    pub account_id: String,
    pub participant: Participant,
    pub actor: Option<String>,
    /// The technician's display name, shown with their chat lines.
    pub actor_name: Option<String>,
    pub source: IpAddr,
}

struct Connection {
    id: u64,
    tx: mpsc::UnboundedSender<ServerMessage>,
}

struct Room {
    account_id: String,
    technicians: Vec<Connection>,
    customer: Option<Connection>,
    /// The device id the customer joined with, if it gave one.
    customer_device: Option<String>,
    /// Relay peers of this session and who owns them (`None`: the customer).
    peers: HashMap<PeerId, Option<String>>,
}

impl Room {
    fn broadcast(&self, message: &ServerMessage) {
        for conn in self.technicians.iter().chain(self.customer.iter()) {
            let _ = conn.tx.send(message.clone());
        }
    }
}

pub struct Live {
    store: Store,
    invitations: Collection<InvitationRef>,
    pins: Collection<PinEntry>,
    clock: SharedClock,
    audit: Arc<Audit>,
    throttle: Arc<GuessThrottle>,
    media: MediaHandle,
    config: SessionConfig,
    rooms: Mutex<HashMap<String, Room>>,
    next_conn: AtomicU64,
}

impl Live {
    pub fn new(
        store: &Store,
        clock: SharedClock,
        audit: Arc<Audit>,
        throttle: Arc<GuessThrottle>,
        media: MediaHandle,
        config: SessionConfig,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            store: store.clone(),
            invitations: store.global("invitations")?,
            pins: store.global("pins")?,
            clock,
            audit,
            throttle,
            media,
            config,
            rooms: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        })
    }

    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    fn sessions(&self, account_id: &str) -> Result<Collection<SupportSession>, StoreError> {
        self.store.account(account_id).collection("sessions")
    }

    fn transcripts(&self, account_id: &str) -> Result<Collection<Vec<ChatLine>>, StoreError> {
        self.store.account(account_id).collection("transcripts")
    }

    /// A session's chat, for the session record and exports.
    pub fn transcript(
        &self,
        account_id: &str,
        session_id: &str,
    ) -> Result<Vec<ChatLine>, LiveError> {
        Ok(self
            .transcripts(account_id)?
            .get(session_id)?
            .unwrap_or_default())
    }

    /// The chat of a session the user may see.
    pub fn transcript_for(
        &self,
        who: &Principal,
        session_id: &str,
    ) -> Result<Vec<ChatLine>, LiveError> {
        let session = self.load_visible(who, session_id)?;
        self.transcript(&session.account_id, &session.id)
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn create_session(
        &self,
        by: &Principal,
        customer_reference: Option<String>,
    ) -> Result<NewInvitation, LiveError> {
        let customer_reference = match customer_reference.map(|r| r.trim().to_owned()) {
            Some(r) if r.chars().count() > 200 || r.chars().any(char::is_control) => {
                return Err(LiveError::BadMessage(
                    "the customer reference may have at most 200 printable characters".into(),
                ));
            }
            Some(r) if !r.is_empty() => Some(r),
            _ => None,
        };
        let now = self.clock.now_ms();
        let session = SupportSession {
            id: random_id(),
            account_id: by.account_id.clone(),
            technician_id: by.user_id.clone(),
            technician_name: by.display_name.clone(),
            organisation: by.organisation.clone(),
            customer_reference,
            group_ids: by.group_ids.clone(),
            created_ms: now,
            invitation_expires_ms: now + self.config.invitation_ttl_secs * 1000,
            ends_by_ms: now + self.config.max_duration_secs * 1000,
            state: SessionState::Waiting,
            consent: None,
            paused: false,
            joined_ms: None,
            ended_ms: None,
            end_reason: None,
        };
        self.sessions(&by.account_id)?.put(&session.id, &session)?;
        let token = random_token();
        self.invitations.put(
            &sha256_hex(token.as_bytes()),
            &InvitationRef {
                account_id: session.account_id.clone(),
                session_id: session.id.clone(),
            },
        )?;
        let pin = self.allocate_pin(&session)?;
        self.store.flush().await?;
        self.audit.record(
            AuditKind::SessionCreated,
            Some(&by.account_id),
            Some(&by.user_id),
            None,
            format!("session {}", session.id),
        );
        Ok(NewInvitation {
            session: self.view(&session),
            token,
            pin,
        })
    }

    /// A 6-digit PIN unique among live invitations.
    fn allocate_pin(&self, session: &SupportSession) -> Result<String, LiveError> {
        let entry = PinEntry {
            account_id: session.account_id.clone(),
            session_id: session.id.clone(),
            expires_ms: session.invitation_expires_ms,
        };
        let now = self.clock.now_ms();
        loop {
            let pin = format!("{:06}", OsRng.gen_range(0..1_000_000u32));
            // Reclaim a PIN whose invitation has expired.
            if let Some(old) = self.pins.get(&pin)?
                && old.expires_ms <= now
            {
                self.pins.remove(&pin)?;
            }
            if self.pins.insert_new(&pin, &entry)? {
                return Ok(pin);
            }
        }
    }

    pub fn session_for(&self, who: &Principal, id: &str) -> Result<SessionView, LiveError> {
        let session = self.load_visible(who, id)?;
        Ok(self.view(&session))
    }

    /// Whether a console user may see a session: admins see the account's, technicians
    /// their own, and those in a group that allows it their group's.
    fn visible_to(who: &Principal, session: &SupportSession) -> bool {
        who.account_id == session.account_id
            && (who.role == Role::AccountAdmin
                || who.user_id == session.technician_id
                || (who.sees_group_history
                    && session.group_ids.iter().any(|g| who.group_ids.contains(g))))
    }

    /// Loads a session the user may see; others are answered exactly like missing ones.
    fn load_visible(&self, who: &Principal, id: &str) -> Result<SupportSession, LiveError> {
        let session = self.load(&who.account_id, id)?;
        if Self::visible_to(who, &session) {
            Ok(session)
        } else {
            Err(LiveError::NotFound)
        }
    }

    pub fn list_sessions(
        &self,
        who: &Principal,
        filter: &SessionFilter,
    ) -> Result<Vec<SessionView>, LiveError> {
        Ok(self
            .history(who, filter)?
            .iter()
            .map(|s| self.view(s))
            .collect())
    }

    /// The sessions the user may see that match the filter, newest first.
    pub fn history(
        &self,
        who: &Principal,
        filter: &SessionFilter,
    ) -> Result<Vec<SupportSession>, LiveError> {
        let mut sessions = self.sessions(&who.account_id)?.values()?;
        sessions.retain(|s| Self::visible_to(who, s) && filter.matches(s));
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
        sessions.truncate(filter.limit.unwrap_or(100).min(10_000));
        Ok(sessions)
    }

    fn load(&self, account_id: &str, id: &str) -> Result<SupportSession, LiveError> {
        let mut session = self
            .sessions(account_id)?
            .get(id)?
            .ok_or(LiveError::NotFound)?;
        self.expire_if_due(&mut session)?;
        Ok(session)
    }

    /// Applies expiry lazily: an invitation nobody used, or a session past its maximum
    /// duration, ends the moment anyone looks at it.
    fn expire_if_due(&self, session: &mut SupportSession) -> Result<(), LiveError> {
        let now = self.clock.now_ms();
        let due = session.state != SessionState::Ended
            && ((session.joined_ms.is_none() && now >= session.invitation_expires_ms)
                || now >= session.ends_by_ms);
        if due {
            *session = self.finish(&session.account_id, &session.id, EndReason::Expired)?;
        }
        Ok(())
    }

    fn view(&self, session: &SupportSession) -> SessionView {
        let customer_connected = self
            .rooms()
            .get(&session.id)
            .is_some_and(|r| r.customer.is_some());
        SessionView::of(session, customer_connected)
    }

    /// Resolves an invitation token to its session, counting failures per source.
    pub fn resolve_invitation(
        &self,
        token: &str,
        source: IpAddr,
    ) -> Result<SupportSession, LiveError> {
        if !self.throttle.allows(source) {
            return Err(LiveError::Throttled);
        }
        let found = match self.invitations.get(&sha256_hex(token.as_bytes()))? {
            Some(r) => Some(self.load(&r.account_id, &r.session_id)?),
            None => None,
        };
        match found {
            Some(session) if session.state != SessionState::Ended => Ok(session),
            other => {
                let detail = match &other {
                    Some(s) => format!("invitation of ended session {}", s.id),
                    None => "unknown invitation token".to_owned(),
                };
                self.guess_failed(AuditKind::InvitationRejected, source, detail);
                Err(LiveError::InvitationInvalid)
            }
        }
    }

    /// Exchanges a PIN for a customer capability token of the same session.
    pub async fn exchange_pin(&self, pin: &str, source: IpAddr) -> Result<String, LiveError> {
        if !self.throttle.allows(source) {
            return Err(LiveError::Throttled);
        }
        let pin = pin.trim();
        let valid_shape = pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit());
        let entry = if valid_shape {
            self.pins.get(pin)?
        } else {
            None
        };
        let now = self.clock.now_ms();
        let session = match entry {
            Some(e) if now < e.expires_ms => Some(self.load(&e.account_id, &e.session_id)?),
            _ => None,
        };
        let Some(session) = session.filter(|s| s.state == SessionState::Waiting) else {
            self.guess_failed(AuditKind::PinRejected, source, "wrong or expired PIN");
            return Err(LiveError::PinInvalid);
        };
        let token = random_token();
        self.invitations.put(
            &sha256_hex(token.as_bytes()),
            &InvitationRef {
                account_id: session.account_id.clone(),
                session_id: session.id.clone(),
            },
        )?;
        self.store.flush().await?;
        Ok(token)
    }

    fn guess_failed(&self, kind: AuditKind, source: IpAddr, detail: impl Into<String>) {
        self.audit.record(kind, None, None, Some(source), detail);
        if self.throttle.fail(source) {
            self.audit
                .source_throttled(source, "invitation or PIN guessing");
        }
    }

    /// Connects a technician's signaling socket to a session of their account.
    pub fn attach_technician(
        &self,
        who: &Principal,
        session_id: &str,
        source: IpAddr,
    ) -> Result<(Attachment, mpsc::UnboundedReceiver<ServerMessage>), LiveError> {
        let session = self.load_visible(who, session_id)?;
        if session.state == SessionState::Ended {
            return Err(LiveError::Ended);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.rooms()
            .entry(session.id.clone())
            .or_insert_with(|| new_room(&session.account_id))
            .technicians
            .push(Connection { id: conn_id, tx });
        self.send_state_to(&session, conn_id);
        Ok((
            Attachment {
                conn_id,
                session_id: session.id,
                account_id: session.account_id,
                participant: Participant::Technician,
                actor: Some(who.user_id.clone()),
                actor_name: Some(who.display_name.clone()),
                source,
            },
            rx,
        ))
    }

    /// Connects the customer's signaling socket. Only one customer device at a time.
    pub fn attach_customer(
        &self,
        token: &str,
        device: Option<&str>,
        source: IpAddr,
    ) -> Result<(Attachment, mpsc::UnboundedReceiver<ServerMessage>), LiveError> {
        let device = device.filter(|d| (16..=64).contains(&d.len()));
        let mut session = self.resolve_invitation(token, source)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut rooms = self.rooms();
            let room = rooms
                .entry(session.id.clone())
                .or_insert_with(|| new_room(&session.account_id));
            // The same tab coming back (reload, network drop) takes its place again, and
            // its stale socket is let go; another device is refused.
            let same_device = device.is_some() && room.customer_device.as_deref() == device;
            if room.customer.is_some() && !same_device {
                return Err(LiveError::AlreadyJoined);
            }
            room.customer = Some(Connection { id: conn_id, tx });
            room.customer_device = device.map(str::to_owned);
        }
        if session.state == SessionState::Waiting {
            session = self.transition(&session.account_id, &session.id, |s| {
                s.state = SessionState::Joined;
                s.joined_ms = Some(self.clock.now_ms());
            })?;
        }
        // Once the customer is in, the PIN has done its job; nobody else may use it.
        self.release_pin(&session.id)?;
        self.broadcast_state(&session);
        if let Ok(lines) = self.transcript(&session.account_id, &session.id)
            && !lines.is_empty()
            && let Some(room) = self.rooms().get(&session.id)
            && let Some(conn) = room.customer.as_ref().filter(|c| c.id == conn_id)
        {
            let _ = conn.tx.send(ServerMessage::Transcript { lines });
        }
        Ok((
            Attachment {
                conn_id,
                session_id: session.id,
                account_id: session.account_id,
                participant: Participant::Customer,
                actor: None,
                actor_name: None,
                source,
            },
            rx,
        ))
    }

    fn release_pin(&self, session_id: &str) -> Result<(), StoreError> {
        // PINs are few (unused invitations only), so a scan is cheap.
        self.pins.retain(|e| e.session_id != session_id)
    }

    pub fn detach(&self, attachment: &Attachment) {
        let session = {
            let mut rooms = self.rooms();
            let Some(room) = rooms.get_mut(&attachment.session_id) else {
                return;
            };
            match attachment.participant {
                Participant::Technician => room.technicians.retain(|c| c.id != attachment.conn_id),
                Participant::Customer => {
                    if room
                        .customer
                        .as_ref()
                        .is_some_and(|c| c.id == attachment.conn_id)
                    {
                        room.customer = None;
                    }
                }
            }
            let empty = room.technicians.is_empty() && room.customer.is_none();
            if empty && room.peers.is_empty() {
                rooms.remove(&attachment.session_id);
            }
            self.sessions(&attachment.account_id)
                .ok()
                .and_then(|c| c.get(&attachment.session_id).ok().flatten())
        };
        if let Some(session) = session {
            self.broadcast_state(&session);
        }
    }

    /// Handles one message from an attached participant; the reply (if any) goes back
    /// only to the sender.
    pub async fn handle(
        &self,
        from: &Attachment,
        message: ClientMessage,
    ) -> Result<Option<ServerMessage>, LiveError> {
        let customer = from.participant == Participant::Customer;
        match message {
            ClientMessage::Ping => Ok(Some(ServerMessage::Pong)),
            ClientMessage::Chat { text } => {
                let text = text.trim();
                if text.is_empty()
                    || text.chars().count() > MAX_CHAT_CHARS
                    || text.chars().any(|c| c.is_control() && c != '\n')
                {
                    return Err(LiveError::BadMessage(format!(
                        "a chat line has 1 to {MAX_CHAT_CHARS} characters"
                    )));
                }
                let session = self.load(&from.account_id, &from.session_id)?;
                if session.state == SessionState::Ended {
                    return Err(LiveError::Ended);
                }
                let line = ChatLine {
                    at_ms: self.clock.now_ms(),
                    from: if customer {
                        Speaker::Customer
                    } else {
                        Speaker::Technician
                    },
                    author: if customer {
                        "Customer".to_owned()
                    } else {
                        from.actor_name.clone().unwrap_or_default()
                    },
                    text: text.to_owned(),
                };
                self.transcripts(&from.account_id)?
                    .update(&from.session_id, |lines| {
                        let mut lines = lines.unwrap_or_default();
                        lines.push(line.clone());
                        Some(lines)
                    })?;
                self.store.flush().await?;
                if let Some(room) = self.rooms().get(&from.session_id) {
                    room.broadcast(&ServerMessage::Chat { line });
                }
                Ok(None)
            }
            ClientMessage::Watch { .. } | ClientMessage::Join { .. } => Err(LiveError::BadMessage(
                "already joined; send this only once, first".into(),
            )),
            ClientMessage::Consent { camera, microphone } if customer => {
                let now = self.clock.now_ms();
                let session = self.transition(&from.account_id, &from.session_id, |s| {
                    s.consent = Some(ConsentReceipt {
                        camera,
                        microphone: camera && microphone,
                        at_ms: now,
                    });
                    s.state = if camera {
                        SessionState::Consented
                    } else {
                        SessionState::Declined
                    };
                })?;
                self.audit.record(
                    if camera {
                        AuditKind::ConsentGiven
                    } else {
                        AuditKind::ConsentDeclined
                    },
                    Some(&from.account_id),
                    None,
                    Some(from.source),
                    format!(
                        "session {} camera={camera} microphone={}",
                        from.session_id,
                        camera && microphone
                    ),
                );
                if !camera {
                    self.drop_customer_media(&from.session_id);
                }
                self.store.flush().await?;
                self.broadcast_state(&session);
                Ok(None)
            }
            ClientMessage::Pause { paused } if customer => {
                let session = self.transition(&from.account_id, &from.session_id, |s| {
                    s.paused = paused;
                })?;
                self.broadcast_state(&session);
                Ok(None)
            }
            ClientMessage::End => {
                let reason = if customer {
                    EndReason::Customer
                } else {
                    EndReason::Technician
                };
                self.end(&from.account_id, &from.session_id, reason).await?;
                Ok(None)
            }
            ClientMessage::Consent { .. } | ClientMessage::Pause { .. } => Err(
                LiveError::BadMessage("only the customer can send this message".into()),
            ),
        }
    }

    fn drop_customer_media(&self, session_id: &str) {
        let peers: Vec<PeerId> = self
            .rooms()
            .get_mut(session_id)
            .map(|room| {
                let mine: Vec<PeerId> = room
                    .peers
                    .iter()
                    .filter(|(_, owner)| owner.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                for id in &mine {
                    room.peers.remove(id);
                }
                mine
            })
            .unwrap_or_default();
        for peer in peers {
            self.media.remove_peer(peer);
        }
    }

    /// Applies a change to the stored session, refusing changes to an ended one.
    fn transition(
        &self,
        account_id: &str,
        session_id: &str,
        mut change: impl FnMut(&mut SupportSession),
    ) -> Result<SupportSession, LiveError> {
        let mut ended = false;
        let updated = self.sessions(account_id)?.update(session_id, |s| {
            ended = false;
            let mut s = s?;
            if s.state == SessionState::Ended {
                ended = true;
                return Some(s);
            }
            change(&mut s);
            Some(s)
        })?;
        match updated {
            None => Err(LiveError::NotFound),
            Some(_) if ended => Err(LiveError::Ended),
            Some(s) => Ok(s),
        }
    }

    /// Ends a session: records why, tells every participant, releases its media and
    /// invalidates its invitation.
    pub async fn end(
        &self,
        account_id: &str,
        session_id: &str,
        reason: EndReason,
    ) -> Result<SessionView, LiveError> {
        let session = self.finish(account_id, session_id, reason)?;
        self.store.flush().await?;
        Ok(self.view(&session))
    }

    pub async fn end_for(
        &self,
        who: &Principal,
        session_id: &str,
    ) -> Result<SessionView, LiveError> {
        self.load_visible(who, session_id)?;
        self.end(&who.account_id, session_id, EndReason::Technician)
            .await
    }

    fn finish(
        &self,
        account_id: &str,
        session_id: &str,
        reason: EndReason,
    ) -> Result<SupportSession, LiveError> {
        let now = self.clock.now_ms();
        let mut already = false;
        let session = self
            .sessions(account_id)?
            .update(session_id, |s| {
                let mut s = s?;
                already = s.state == SessionState::Ended;
                if !already {
                    s.state = SessionState::Ended;
                    s.ended_ms = Some(now);
                    s.end_reason = Some(reason);
                }
                Some(s)
            })?
            .ok_or(LiveError::NotFound)?;
        if already {
            return Ok(session);
        }
        self.release_pin(session_id)?;
        self.invitations.retain(|r| r.session_id != session_id)?;
        if let Some(room) = self.rooms().remove(session_id) {
            room.broadcast(&ServerMessage::State {
                session: SessionView::of(&session, false),
            });
            room.broadcast(&ServerMessage::Ended { reason });
        }
        self.media.close_room(session_id);
        self.audit.record(
            AuditKind::SessionEnded,
            Some(account_id),
            None,
            None,
            format!("session {session_id} ended: {reason:?}"),
        );
        Ok(session)
    }

    /// The customer's page publishes its camera (WHIP). Requires camera consent.
    pub fn publish(
        &self,
        token: &str,
        source: IpAddr,
        offer: &str,
        announce: SocketAddr,
    ) -> Result<(String, PeerId, String), LiveError> {
        let session = self.resolve_invitation(token, source)?;
        if !session.consent.as_ref().is_some_and(|c| c.camera) {
            return Err(LiveError::NoConsent);
        }
        let (peer, answer) = self
            .media
            .negotiate(&session.id, PeerRole::Publisher, offer, announce)
            .inspect_err(|e| self.media_offer_failed(&session, source, e))?;
        self.register_peer(&session, peer, None);
        Ok((session.id, peer, answer))
    }

    /// A technician's console receives the session's media (WHEP).
    pub fn subscribe(
        &self,
        who: &Principal,
        session_id: &str,
        source: IpAddr,
        offer: &str,
        announce: SocketAddr,
    ) -> Result<(PeerId, String), LiveError> {
        let session = self.load_visible(who, session_id)?;
        if session.state == SessionState::Ended {
            return Err(LiveError::Ended);
        }
        let (peer, answer) = self
            .media
            .negotiate(&session.id, PeerRole::Subscriber, offer, announce)
            .inspect_err(|e| self.media_offer_failed(&session, source, e))?;
        self.register_peer(&session, peer, Some(who.user_id.clone()));
        Ok((peer, answer))
    }

    fn media_offer_failed(&self, session: &SupportSession, source: IpAddr, error: &MediaError) {
        self.audit.record(
            AuditKind::MalformedMediaOffer,
            Some(&session.account_id),
            None,
            Some(source),
            format!("session {}: {error}", session.id),
        );
    }

    fn register_peer(&self, session: &SupportSession, peer: PeerId, owner: Option<String>) {
        let mut rooms = self.rooms();
        let room = rooms
            .entry(session.id.clone())
            .or_insert_with(|| new_room(&session.account_id));
        if owner.is_none() {
            // A republishing customer (reload) replaces its earlier peer in the relay.
            room.peers.retain(|_, o| o.is_some());
        }
        room.peers.insert(peer, owner);
    }

    /// Ends a relay peer (WHIP/WHEP `DELETE`). The customer may end only its own peer,
    /// a technician only theirs.
    pub fn leave_media(
        &self,
        session_id: &str,
        peer: PeerId,
        owner: Option<&str>,
    ) -> Result<(), LiveError> {
        let mut rooms = self.rooms();
        let room = rooms.get_mut(session_id).ok_or(LiveError::NotFound)?;
        match room.peers.get(&peer) {
            Some(o) if o.as_deref() == owner => {
                room.peers.remove(&peer);
                drop(rooms);
                self.media.remove_peer(peer);
                Ok(())
            }
            _ => Err(LiveError::NotFound),
        }
    }

    /// Reacts to what the relay reports.
    pub fn on_media_event(&self, event: MediaEvent) {
        match event {
            MediaEvent::VideoFlowing { room, peer } => {
                let Some(account_id) = self.peer_account(&room, peer) else {
                    return;
                };
                if let Ok(session) = self.transition(&account_id, &room, |s| {
                    if s.state == SessionState::Consented {
                        s.state = SessionState::Live;
                    }
                }) {
                    self.broadcast_state(&session);
                }
            }
            MediaEvent::Disconnected { room, peer, role } => {
                let account_id = {
                    let mut rooms = self.rooms();
                    let Some(r) = rooms.get_mut(&room) else {
                        return;
                    };
                    r.peers.remove(&peer);
                    let account_id = r.account_id.clone();
                    if r.peers.is_empty() && r.technicians.is_empty() && r.customer.is_none() {
                        rooms.remove(&room);
                    }
                    account_id
                };
                if role == PeerRole::Publisher
                    && let Ok(session) = self.transition(&account_id, &room, |s| {
                        if s.state == SessionState::Live {
                            s.state = SessionState::Consented;
                        }
                    })
                {
                    self.broadcast_state(&session);
                }
            }
            MediaEvent::Connected { .. } | MediaEvent::MalformedFlood { .. } => {}
        }
    }

    fn peer_account(&self, room: &str, peer: PeerId) -> Option<String> {
        let rooms = self.rooms();
        let r = rooms.get(room)?;
        r.peers.contains_key(&peer).then(|| r.account_id.clone())
    }

    fn broadcast_state(&self, session: &SupportSession) {
        let message = ServerMessage::State {
            session: self.view(session),
        };
        if let Some(room) = self.rooms().get(&session.id) {
            room.broadcast(&message);
        }
    }

    fn send_state_to(&self, session: &SupportSession, conn_id: u64) {
        let message = ServerMessage::State {
            session: self.view(session),
        };
        let lines = self
            .transcript(&session.account_id, &session.id)
            .unwrap_or_default();
        if let Some(room) = self.rooms().get(&session.id) {
            for conn in room.technicians.iter().chain(room.customer.iter()) {
                if conn.id == conn_id {
                    let _ = conn.tx.send(message.clone());
                    if !lines.is_empty() {
                        let _ = conn.tx.send(ServerMessage::Transcript {
                            lines: lines.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The account's session records matching a scope, for export and deletion.
    pub fn records(
        &self,
        account_id: &str,
        session_id: Option<&str>,
        customer_reference: Option<&str>,
    ) -> Result<Vec<SupportSession>, LiveError> {
        let mut sessions = self.sessions(account_id)?.values()?;
        sessions.retain(|s| {
            session_id.is_none_or(|id| s.id == id)
                && customer_reference.is_none_or(|r| s.customer_reference.as_deref() == Some(r))
        });
        sessions.sort_by_key(|s| s.created_ms);
        Ok(sessions)
    }

    /// Removes a session's record (ending it first if it is still open).
    pub fn delete_record(&self, account_id: &str, session_id: &str) -> Result<(), LiveError> {
        if self.load(account_id, session_id)?.state != SessionState::Ended {
            self.finish(account_id, session_id, EndReason::Technician)?;
        }
        self.sessions(account_id)?.remove(session_id)?;
        self.transcripts(account_id)?.remove(session_id)?;
        Ok(())
    }

    /// Sessions with someone connected.
    pub fn open_sessions(&self) -> usize {
        self.rooms().len()
    }

    /// Ends the open sessions of an account that is being deleted.
    pub fn close_account(&self, account_id: &str) {
        let open: Vec<String> = self
            .rooms()
            .iter()
            .filter(|(_, room)| room.account_id == account_id)
            .map(|(id, _)| id.clone())
            .collect();
        for session_id in open {
            let _ = self.finish(account_id, &session_id, EndReason::Expired);
        }
    }

    /// Ends every session that has participants; used on shutdown so they are told.
    pub fn shutdown(&self) {
        let open: Vec<(String, String)> = self
            .rooms()
            .iter()
            .map(|(id, room)| (room.account_id.clone(), id.clone()))
            .collect();
        for (account_id, session_id) in open {
            if let Err(e) = self.finish(&account_id, &session_id, EndReason::Shutdown) {
                tracing::warn!(error = %e, session_id, "could not end session on shutdown");
            }
        }
    }

    /// Ends sessions whose time is up, so that participants still connected are told.
    pub fn sweep(&self) {
        let open: Vec<(String, String)> = self
            .rooms()
            .iter()
            .map(|(id, room)| (room.account_id.clone(), id.clone()))
            .collect();
        for (account_id, session_id) in open {
            if let Ok(mut session) = self
                .sessions(&account_id)
                .and_then(|c| c.get(&session_id))
                .map_err(LiveError::from)
                .and_then(|s| s.ok_or(LiveError::NotFound))
            {
                let _ = self.expire_if_due(&mut session);
            }
        }
    }
}

fn new_room(account_id: &str) -> Room {
    Room {
        account_id: account_id.to_owned(),
        technicians: Vec::new(),
        customer: None,
        customer_device: None,
        peers: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_from_tagged_json() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"consent","camera":true,"microphone":false}"#)
                .expect("parse");
        assert_eq!(
            m,
            ClientMessage::Consent {
                camera: true,
                microphone: false
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"end"}"#).expect("parse");
        assert_eq!(m, ClientMessage::End);
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"explode"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"pause","paused":true,"x":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"camera":true}"#).is_err());
    }

    #[test]
    fn server_messages_are_tagged() {
        let json = serde_json::to_string(&ServerMessage::Ended {
            reason: EndReason::Customer,
        })
        .expect("json");
        assert_eq!(json, r#"{"type":"ended","reason":"customer"}"#);
    }
}
