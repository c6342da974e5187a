//! Support sessions. [`Live`] is here with what every part uses: creating, loading and
//! listing sessions, attaching technicians, the state transition, ending, and the sweep.
//! Each other concept has its own file, several with an `impl Live` block of their own:
//! `model` (the session), `protocol` (the wire messages), `room` (the in-memory room),
//! `customer` (invitation, PIN, joining and the device binding), `signaling` (what each
//! message does), `media_peers`, `records` (recordings, stills, the record) and
//! `colleagues`, and `ending`.
//!
//! A session is created by a technician in the `Waiting` state with an invitation. The
//! customer opens the link (or types the PIN) and joins; nothing is shared until the
//! customer consents to the camera. The customer's page then publishes its camera to the
//! relay, the technicians' consoles receive it, and the session is `Live` once video
//! reaches the relay. Either side may end it.

mod colleagues;
mod customer;
mod ending;
mod media_peers;
mod model;
mod protocol;
mod recording;
mod records;
pub mod reports;
mod room;
mod signaling;
pub mod toolkit;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use rand::rngs::OsRng;
use tokio::sync::mpsc;

use crate::audit::{Actor, Audit, AuditKind, GuessThrottle};
use crate::auth::{Principal, Role, random_id, random_token, sha256_hex};
use crate::clock::{SharedClock, UnixMillis};
use crate::config::SessionConfig;
use crate::ids::{AccountId, SessionId, UserId};
use crate::media::{MediaError, MediaEvent, MediaHandle, PeerId, PeerRole};
use crate::store::{Collection, Store, StoreError};
pub use model::{
    ConsentReceipt, CustomerProof, EndReason, NewInvitation, SessionFilter, SessionRecord,
    SessionState, SessionView, SupportSession,
};
use model::{InvitationRef, PinEntry, RoomFacts};
use protocol::MAX_CHAT_CHARS;
pub use protocol::{ChatLine, ClientMessage, ErrorCode, ServerMessage, Speaker};
pub use room::{Attachment, Participant};
use room::{Connection, Room, Rooms, lock, new_room, view_in};
pub use toolkit::{
    CameraCapabilities, CameraRequest, Colleague, ColleagueRole, ConsentChange, ConsentEvent,
    Point, Recording, Shape, Still, StillPurpose,
};

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
    #[error("this request does not come from the device that joined the session")]
    WrongDevice,
    #[error("the customer has not agreed to share the camera")]
    NoConsent,
    #[error("{0}")]
    NotAllowed(String),
    #[error("the customer is not connected")]
    CustomerAbsent,
    #[error("the session has ended")]
    Ended,
    #[error("{0}")]
    BadMessage(String),
    /// A message its sender cannot send now, or not in its role.
    #[error("{0}")]
    Unexpected(String),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LiveError {
    /// The one code this error goes out with, over HTTP and over the signaling socket.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound | Self::Media(MediaError::UnknownPeer) => ErrorCode::NotFound,
            Self::InvitationInvalid => ErrorCode::InvitationInvalid,
            Self::PinInvalid => ErrorCode::PinInvalid,
            Self::Throttled => ErrorCode::Throttled,
            Self::AlreadyJoined => ErrorCode::AlreadyJoined,
            Self::WrongDevice => ErrorCode::WrongDevice,
            Self::NoConsent => ErrorCode::NoConsent,
            Self::NotAllowed(_) => ErrorCode::NotAllowed,
            Self::CustomerAbsent => ErrorCode::CustomerAbsent,
            Self::Ended => ErrorCode::Ended,
            Self::BadMessage(_) => ErrorCode::BadRequest,
            Self::Unexpected(_) => ErrorCode::Unexpected,
            Self::Media(MediaError::InvalidOffer(_)) => ErrorCode::InvalidSdp,
            Self::Media(_) | Self::Store(_) => ErrorCode::Internal,
        }
    }

    /// What a participant may read: everything but an internal error's text, which stays
    /// in the log.
    pub fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal error".to_owned(),
            _ => self.to_string(),
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
    rooms: Rooms,
    next_conn: AtomicU64,
    /// Audited refusals of devices that did not join, per session (see `customer.rs`).
    refusals: std::sync::Mutex<HashMap<SessionId, customer::Refusals>>,
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
            rooms: Rooms::default(),
            next_conn: AtomicU64::new(1),
            refusals: std::sync::Mutex::default(),
        })
    }

    pub fn now_ms(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    fn sessions(&self, account_id: &AccountId) -> Result<Collection<SupportSession>, StoreError> {
        self.store.account(account_id).collection("sessions")
    }

    /// The stored keys of the invitation tokens issued for each session.
    fn invitation_keys(
        &self,
        account_id: &AccountId,
    ) -> Result<Collection<Vec<String>>, StoreError> {
        self.store.account(account_id).collection("invitation_keys")
    }

    fn transcripts(&self, account_id: &AccountId) -> Result<Collection<Vec<ChatLine>>, StoreError> {
        self.store.account(account_id).collection("transcripts")
    }

    /// A session's chat, for the session record and exports.
    pub fn transcript(
        &self,
        account_id: &AccountId,
        session_id: &SessionId,
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
        session_id: &SessionId,
    ) -> Result<Vec<ChatLine>, LiveError> {
        let session = self.load_visible(who, session_id)?;
        self.transcript(&session.account_id, &session.id)
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Room>> {
        lock(&self.rooms)
    }

    /// Creates a session; `recording_allowed` is the account's policy, fixed for the
    /// session so that what the customer is asked never changes under them.
    pub async fn create_session(
        &self,
        by: &Principal,
        customer_reference: Option<String>,
        recording_allowed: bool,
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
            id: SessionId::random(),
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
            recording_allowed,
            colleagues: Vec::new(),
            consent_log: Vec::new(),
            customer_device: None,
            device_key: None,
            stills: Vec::new(),
            recordings: Vec::new(),
        };
        self.sessions(&by.account_id)?.put(&session.id, &session)?;
        let token = self.issue_invitation(&session)?;
        let pin = self.allocate_pin(&session)?;
        self.store.flush().await?;
        self.audit.record(
            AuditKind::SessionCreated,
            Actor::user(&by.account_id, &by.user_id),
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

    pub fn session_for(&self, who: &Principal, id: &SessionId) -> Result<SessionView, LiveError> {
        let session = self.load_visible(who, id)?;
        Ok(self.view(&session))
    }

    /// Whether a console user may see a session: admins see the account's, technicians
    /// their own, and those in a group that allows it their group's.
    fn visible_to(who: &Principal, session: &SupportSession) -> bool {
        who.account_id == session.account_id
            && (who.role == Role::AccountAdmin
                || who.user_id == session.technician_id
                || session.colleagues.iter().any(|c| c.user_id == who.user_id)
                || (who.sees_group_history
                    && session.group_ids.iter().any(|g| who.group_ids.contains(g))))
    }

    /// Loads a session the user may see; others are answered exactly like missing ones.
    fn load_visible(&self, who: &Principal, id: &SessionId) -> Result<SupportSession, LiveError> {
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

    fn load(&self, account_id: &AccountId, id: &SessionId) -> Result<SupportSession, LiveError> {
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
        view_in(&self.rooms(), session)
    }

    /// Connects a technician's signaling socket to a session of their account.
    pub fn attach_technician(
        &self,
        who: &Principal,
        session_id: &SessionId,
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
            .push(Connection {
                id: conn_id,
                participant: Participant::Technician {
                    user_id: who.user_id.clone(),
                },
                tx,
            });
        self.send_state_to(&session, conn_id);
        self.send_muted_to(&session.id, conn_id);
        Ok((
            Attachment::to(
                session,
                conn_id,
                Participant::Technician {
                    user_id: who.user_id.clone(),
                },
                &who.display_name,
                source,
            ),
            rx,
        ))
    }

    /// Tells a participant who joins who is muted already.
    fn send_muted_to(&self, session_id: &SessionId, conn_id: u64) {
        if let Some(room) = self.rooms().get(session_id)
            && let Some(conn) = room
                .technicians
                .iter()
                .chain(room.customer.iter())
                .find(|c| c.id == conn_id)
        {
            for message in room.muted.values() {
                let _ = conn.tx.send(message.clone());
            }
        }
    }

    fn release_pin(&self, session_id: &SessionId) -> Result<(), StoreError> {
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
                Participant::Technician { .. } => {
                    room.technicians.retain(|c| c.id != attachment.conn_id)
                }
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

    /// Applies a change to the stored session, refusing changes to an ended one.
    fn transition(
        &self,
        account_id: &AccountId,
        session_id: &SessionId,
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
                    if !room.drawing.is_empty() {
                        let _ = conn.tx.send(ServerMessage::Drawing {
                            shapes: room.drawing.clone(),
                        });
                    }
                    if let Some(capabilities) = room.capabilities.clone() {
                        let _ = conn.tx.send(ServerMessage::Capabilities { capabilities });
                    }
                }
            }
        }
    }

    /// Sessions with someone connected.
    pub fn open_sessions(&self) -> usize {
        self.rooms().len()
    }
}

/// A stored file opened for reading at any position.
pub trait ReadSeek: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> ReadSeek for T {}

/// A stored recording and readers of its parts (head, body, tail), in order.
pub struct RecordingFile {
    pub recording: Recording,
    pub parts: Vec<Box<dyn ReadSeek + Send>>,
}

fn still_file(session_id: &SessionId, still_id: &str) -> String {
    format!("{session_id}-still-{still_id}")
}

/// The largest still accepted: a 12-megapixel JPEG is 3–6 MB.
pub const MAX_STILL_BYTES: usize = 16 << 20;
