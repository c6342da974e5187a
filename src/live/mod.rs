//! Support sessions: [`Live`] runs them — the invitation (link token and PIN), joining and
//! the device binding, the state machine, the signaling handlers, media, stills,
//! recordings and colleagues. The session model lives in `model`, the wire protocol in
//! `protocol`, the in-memory room in `room`.
//!
//! A session is created by a technician in the `Waiting` state with an invitation. The
//! customer opens the link (or types the PIN) and joins; nothing is shared until the
//! customer consents to the camera. The customer's page then publishes its camera to the
//! relay, the technicians' consoles receive it, and the session is `Live` once video
//! reaches the relay. Either side may end it.

mod customer;
mod model;
mod protocol;
mod recording;
mod room;
pub mod toolkit;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use rand::rngs::OsRng;
use tokio::sync::mpsc;

use crate::audit::{Audit, AuditKind, GuessThrottle};
use crate::auth::{Principal, Role, random_id, random_token, sha256_hex};
use crate::clock::{SharedClock, UnixMillis};
use crate::config::SessionConfig;
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
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Store(#[from] StoreError),
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
        })
    }

    pub fn now_ms(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    fn sessions(&self, account_id: &str) -> Result<Collection<SupportSession>, StoreError> {
        self.store.account(account_id).collection("sessions")
    }

    /// The stored keys of the invitation tokens issued for each session.
    fn invitation_keys(&self, account_id: &str) -> Result<Collection<Vec<String>>, StoreError> {
        self.store.account(account_id).collection("invitation_keys")
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
                || session.colleagues.iter().any(|c| c.user_id == who.user_id)
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
        view_in(&self.rooms(), session)
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
            .push(Connection {
                id: conn_id,
                user_id: Some(who.user_id.clone()),
                tx,
            });
        self.send_state_to(&session, conn_id);
        self.send_muted_to(&session.id, conn_id);
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

    /// Tells a participant who joins who is muted already.
    fn send_muted_to(&self, session_id: &str, conn_id: u64) {
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
            ClientMessage::Consent {
                camera,
                microphone,
                recording,
            } if customer => {
                let now = self.clock.now_ms();
                let microphone = camera && microphone;
                let session = self.transition(&from.account_id, &from.session_id, |s| {
                    let recording = camera && recording && s.recording_allowed;
                    let event = match (&s.consent, camera) {
                        (_, false) => ConsentChange::Declined,
                        (Some(c), true) if c.camera => ConsentChange::Changed,
                        _ => ConsentChange::Granted,
                    };
                    s.consent_log.push(ConsentEvent {
                        at_ms: now,
                        event,
                        camera,
                        microphone,
                        recording,
                    });
                    s.consent = Some(ConsentReceipt {
                        camera,
                        microphone,
                        recording,
                        at_ms: now,
                    });
                    if !camera {
                        s.state = SessionState::Declined;
                    } else if matches!(s.state, SessionState::Joined | SessionState::Declined) {
                        s.state = SessionState::Consented;
                    }
                })?;
                if !session.consent.as_ref().is_some_and(|c| c.recording) {
                    self.stop_recording(&session);
                }
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
                        "session {} camera={camera} microphone={microphone} recording={}",
                        from.session_id,
                        session.consent.as_ref().is_some_and(|c| c.recording)
                    ),
                );
                if !camera {
                    self.drop_media_of(&from.session_id, None);
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
            ClientMessage::Capabilities { capabilities } if customer => {
                capabilities.validate().map_err(LiveError::BadMessage)?;
                if let Some(room) = self.rooms().get_mut(&from.session_id) {
                    room.to_technicians(&ServerMessage::Capabilities {
                        capabilities: capabilities.clone(),
                    });
                    room.capabilities = Some(capabilities);
                }
                Ok(None)
            }
            ClientMessage::Consent { .. }
            | ClientMessage::Pause { .. }
            | ClientMessage::Capabilities { .. } => Err(LiveError::BadMessage(
                "only the customer can send this message".into(),
            )),
            ClientMessage::Mute { muted } => {
                let message = ServerMessage::Muted {
                    from: if customer {
                        Speaker::Customer
                    } else {
                        Speaker::Technician
                    },
                    author: from
                        .actor_name
                        .clone()
                        .unwrap_or_else(|| "Customer".to_owned()),
                    muted,
                };
                if let Some(room) = self.rooms().get_mut(&from.session_id) {
                    // Kept for whoever joins later, so they know who is muted.
                    let who = from.actor.clone().unwrap_or_default();
                    if muted {
                        room.muted.insert(who, message.clone());
                    } else {
                        room.muted.remove(&who);
                    }
                    room.broadcast(&message);
                }
                Ok(None)
            }
            other => self.handle_technician(from, other).await,
        }
    }

    /// The technician's tools. Observers may watch and chat, nothing more.
    async fn handle_technician(
        &self,
        from: &Attachment,
        message: ClientMessage,
    ) -> Result<Option<ServerMessage>, LiveError> {
        if from.participant == Participant::Customer {
            return Err(LiveError::BadMessage(
                "only a technician can send this message".into(),
            ));
        }
        let session = self.load(&from.account_id, &from.session_id)?;
        if session.state == SessionState::Ended {
            return Err(LiveError::Ended);
        }
        if from
            .actor
            .as_deref()
            .is_some_and(|u| session.observed_by(u))
        {
            return Err(LiveError::NotAllowed(
                "observers can watch and chat but not act in the session".into(),
            ));
        }
        let mut rooms = self.rooms();
        let room = rooms.get_mut(&from.session_id).ok_or(LiveError::NotFound)?;
        match message {
            ClientMessage::Draw { shape } => {
                shape.validate().map_err(LiveError::BadMessage)?;
                if room.drawing.len() >= toolkit::MAX_SHAPES {
                    return Err(LiveError::BadMessage(format!(
                        "a drawing has at most {} shapes; clear it first",
                        toolkit::MAX_SHAPES
                    )));
                }
                room.drawing.push(shape);
                room.broadcast(&ServerMessage::Drawing {
                    shapes: room.drawing.clone(),
                });
            }
            ClientMessage::Undo => {
                room.drawing.pop();
                room.broadcast(&ServerMessage::Drawing {
                    shapes: room.drawing.clone(),
                });
            }
            ClientMessage::ClearDrawing => {
                room.drawing.clear();
                room.broadcast(&ServerMessage::Drawing { shapes: Vec::new() });
            }
            ClientMessage::Pointer { at } => {
                if at.as_ref().is_some_and(|p| !toolkit::valid_point(p)) {
                    return Err(LiveError::BadMessage(
                        "positions are fractions of the picture, from 0 to 1".into(),
                    ));
                }
                room.broadcast(&ServerMessage::Pointer { at });
            }
            ClientMessage::Camera { request } => {
                request.validate().map_err(LiveError::BadMessage)?;
                room.to_customer(ServerMessage::Camera { request })?;
            }
            ClientMessage::Snapshot => {
                if room.captures.len() >= 8 {
                    return Err(LiveError::BadMessage(
                        "wait for the snapshots already asked for".into(),
                    ));
                }
                let request = random_id();
                room.to_customer(ServerMessage::Capture {
                    request: request.clone(),
                    purpose: StillPurpose::Snapshot,
                })?;
                room.captures.insert(request, StillPurpose::Snapshot);
            }
            ClientMessage::Freeze { frozen: true } => {
                if room.frozen.is_none()
                    && !room.captures.values().any(|p| *p == StillPurpose::Freeze)
                {
                    let request = random_id();
                    room.to_customer(ServerMessage::Capture {
                        request: request.clone(),
                        purpose: StillPurpose::Freeze,
                    })?;
                    room.captures.insert(request, StillPurpose::Freeze);
                }
            }
            ClientMessage::Freeze { frozen: false } => {
                room.captures.retain(|_, p| *p != StillPurpose::Freeze);
                if let Some(still_id) = room.frozen.take() {
                    // The drawing made on the still stays with it in the record.
                    let shapes = std::mem::take(&mut room.drawing);
                    drop(rooms);
                    self.sessions(&from.account_id)?
                        .update(&from.session_id, |s| {
                            let mut s = s?;
                            if let Some(still) = s.stills.iter_mut().find(|t| t.id == still_id) {
                                still.annotations = shapes.clone();
                            }
                            Some(s)
                        })?;
                    if let Some(room) = self.rooms().get(&from.session_id) {
                        room.broadcast(&ServerMessage::Drawing { shapes: Vec::new() });
                    }
                    self.broadcast_state(&session);
                }
            }
            ClientMessage::Record { on } => {
                drop(rooms);
                if on {
                    self.start_recording(&session, from)?;
                } else {
                    self.stop_recording(&session);
                }
                self.broadcast_state(&session);
            }
            _ => {
                return Err(LiveError::BadMessage(
                    "this message cannot be sent now".into(),
                ));
            }
        }
        Ok(None)
    }

    fn start_recording(&self, session: &SupportSession, by: &Attachment) -> Result<(), LiveError> {
        if !session.recording_allowed {
            return Err(LiveError::NotAllowed(
                "the account's policy does not allow recording".into(),
            ));
        }
        if !session.consent.as_ref().is_some_and(|c| c.recording) {
            return Err(LiveError::NotAllowed(
                "the customer has not agreed to be recorded".into(),
            ));
        }
        let recording_id = random_id();
        let started_ms = self.clock.now_ms();
        {
            let mut rooms = self.rooms();
            let room = rooms.get_mut(&session.id).ok_or(LiveError::NotFound)?;
            if room.recording.is_some() {
                return Ok(());
            }
            room.recording = Some((recording_id.clone(), started_ms));
        }
        let done = self.recording_done(session, recording_id.clone(), started_ms);
        let sink = recording::StoreSink::start(
            self.store.account(&session.account_id),
            &session.id,
            &recording_id,
            done,
        )?;
        self.media.start_recording(&session.id, Box::new(sink));
        self.audit.record(
            AuditKind::RecordingStarted,
            Some(&session.account_id),
            by.actor.as_deref(),
            None,
            format!("session {} recording {recording_id}", session.id),
        );
        Ok(())
    }

    fn stop_recording(&self, session: &SupportSession) {
        let stopped = self
            .rooms()
            .get_mut(&session.id)
            .and_then(|room| room.recording.take());
        if stopped.is_some() {
            self.media.stop_recording(&session.id);
        }
    }

    /// What happens when the recorder has written a recording: it joins the session
    /// record, and whoever is still in the session is told.
    fn recording_done(
        &self,
        session: &SupportSession,
        recording_id: String,
        started_ms: UnixMillis,
    ) -> recording::Done {
        let sessions = self.sessions(&session.account_id);
        let rooms = self.rooms.clone();
        let audit = self.audit.clone();
        let clock = self.clock.clone();
        let account_id = session.account_id.clone();
        let session_id = session.id.clone();
        Box::new(move |result| {
            let stored = match result {
                Ok(Some(stored)) => stored,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, session_id, "recording could not be stored");
                    return;
                }
            };
            let recording = Recording {
                id: recording_id.clone(),
                started_ms,
                ended_ms: clock.now_ms(),
                duration_ms: stored.summary.duration_ms,
                head_len: stored.head_len,
                body_len: stored.summary.body_len,
                tail_len: stored.tail_len,
                customer_audio: stored.summary.frames
                    [usize::from(crate::webm::CUSTOMER_AUDIO_TRACK - 1)]
                    > 0,
                technician_audio: stored.summary.frames
                    [usize::from(crate::webm::TECHNICIAN_AUDIO_TRACK - 1)]
                    > 0,
            };
            let stored = sessions.and_then(|c| {
                c.update(&session_id, |s| {
                    let mut s = s?;
                    s.recordings.push(recording.clone());
                    Some(s)
                })
            });
            if let Err(e) = stored {
                tracing::error!(error = %e, session_id, "recording could not be recorded");
                return;
            }
            audit.record(
                AuditKind::RecordingStored,
                Some(&account_id),
                None,
                None,
                format!(
                    "session {session_id} recording {recording_id}: {} ms",
                    recording.duration_ms
                ),
            );
            let mut rooms = lock(&rooms);
            if let Some(room) = rooms.get_mut(&session_id) {
                if room
                    .recording
                    .as_ref()
                    .is_some_and(|(id, _)| *id == recording_id)
                {
                    room.recording = None;
                }
                room.broadcast(&ServerMessage::Recorded { recording });
            }
        })
    }

    /// Ends the relay peers a participant owns in a session (`None`: the customer).
    fn drop_media_of(&self, session_id: &str, owner: Option<&str>) {
        let peers: Vec<PeerId> = self
            .rooms()
            .get_mut(session_id)
            .map(|room| {
                let theirs: Vec<PeerId> = room
                    .peers
                    .iter()
                    .filter(|(_, o)| o.as_deref() == owner)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &theirs {
                    room.peers.remove(id);
                }
                theirs
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
                    if s.consent.as_ref().is_some_and(|c| c.camera) {
                        s.consent_log.push(ConsentEvent {
                            at_ms: now,
                            event: ConsentChange::Revoked,
                            camera: false,
                            microphone: false,
                            recording: false,
                        });
                    }
                }
                Some(s)
            })?
            .ok_or(LiveError::NotFound)?;
        if already {
            return Ok(session);
        }
        self.release_pin(session_id)?;
        // Tokens stay known until the record goes (see `issue_invitation`); a session
        // from before their keys were noted still drops its tokens here, as it did.
        if self.invitation_keys(account_id)?.get(session_id)?.is_none() {
            self.invitations.retain(|r| r.session_id != session_id)?;
        }
        if let Some(room) = self.rooms().remove(session_id) {
            room.broadcast(&ServerMessage::State {
                session: SessionView::of(&session, RoomFacts::default()),
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
        let talks = !session.observed_by(&who.user_id);
        let (peer, answer) = self
            .media
            .negotiate(&session.id, PeerRole::Subscriber, talks, offer, announce)
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

    /// An ICE restart (WHIP/WHEP `PATCH` with a new offer): the customer may restart only
    /// its own peer, a technician only theirs.
    pub async fn restart_media(
        &self,
        session_id: &str,
        peer: PeerId,
        owner: Option<&str>,
        offer: &str,
    ) -> Result<String, LiveError> {
        let owned = self
            .rooms()
            .get(session_id)
            .and_then(|room| room.peers.get(&peer))
            .is_some_and(|o| o.as_deref() == owner);
        if !owned {
            return Err(LiveError::NotFound);
        }
        Ok(self.media.renegotiate(peer, offer).await?)
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
            MediaEvent::VideoSuspended {
                room,
                peer,
                suspended,
            } => {
                let rooms = self.rooms();
                let Some(r) = rooms.get(&room) else {
                    return;
                };
                let Some(Some(owner)) = r.peers.get(&peer) else {
                    return;
                };
                for conn in r
                    .technicians
                    .iter()
                    .filter(|c| c.user_id.as_deref() == Some(owner.as_str()))
                {
                    let _ = conn.tx.send(ServerMessage::Bandwidth { video: !suspended });
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

    /// A still of a session the user may see, with its image.
    pub fn still_for(
        &self,
        who: &Principal,
        session_id: &str,
        still_id: &str,
    ) -> Result<(Still, Vec<u8>), LiveError> {
        let session = self.load_visible(who, session_id)?;
        self.still_of(&session, still_id)
    }

    fn still_of(
        &self,
        session: &SupportSession,
        still_id: &str,
    ) -> Result<(Still, Vec<u8>), LiveError> {
        let still = session
            .stills
            .iter()
            .find(|s| s.id == still_id)
            .ok_or(LiveError::NotFound)?;
        let image = self
            .store
            .account(&session.account_id)
            .get_file(&still_file(&session.id, still_id))?
            .ok_or(LiveError::NotFound)?;
        Ok((still.clone(), image))
    }

    /// A recording of a session the user may see, and readers of its three parts.
    #[allow(clippy::type_complexity)]
    pub fn recording_for(
        &self,
        who: &Principal,
        session_id: &str,
        recording_id: &str,
    ) -> Result<(Recording, Vec<Box<dyn ReadSeek + Send>>), LiveError> {
        let session = self.load_visible(who, session_id)?;
        let recording = session
            .recordings
            .iter()
            .find(|r| r.id == recording_id)
            .ok_or(LiveError::NotFound)?
            .clone();
        let files = self.store.account(&session.account_id);
        let mut parts: Vec<Box<dyn ReadSeek + Send>> = Vec::new();
        for name in recording::part_names(&session.id, recording_id) {
            parts.push(Box::new(
                files.open_file(&name)?.ok_or(LiveError::NotFound)?,
            ));
        }
        Ok((recording, parts))
    }

    /// Everything about a session, for its record page.
    pub fn record_for(
        &self,
        who: &Principal,
        session_id: &str,
    ) -> Result<SessionRecord, LiveError> {
        let session = self.load_visible(who, session_id)?;
        let transcript = self.transcript(&session.account_id, &session.id)?;
        let duration_secs = match (session.joined_ms, session.ended_ms) {
            (Some(start), Some(end)) => Some(end.saturating_sub(start) / 1000),
            _ => None,
        };
        Ok(SessionRecord {
            session,
            duration_secs,
            transcript,
        })
    }

    /// Invites another technician of the account into a session. Only the session's
    /// technician or an account admin may.
    pub async fn add_colleague(
        &self,
        who: &Principal,
        session_id: &str,
        colleague: Colleague,
    ) -> Result<SessionView, LiveError> {
        let session = self.load_manageable(who, session_id)?;
        if colleague.user_id == session.technician_id {
            return Err(LiveError::BadMessage(
                "the session's own technician is already in it".into(),
            ));
        }
        let session = self.transition(&who.account_id, session_id, |s| {
            s.colleagues.retain(|c| c.user_id != colleague.user_id);
            s.colleagues.push(colleague.clone());
        })?;
        self.audit.record(
            AuditKind::ColleagueInvited,
            Some(&who.account_id),
            Some(&who.user_id),
            None,
            format!(
                "session {session_id}: {} as {:?}",
                colleague.user_id, colleague.role
            ),
        );
        self.store.flush().await?;
        self.broadcast_state(&session);
        Ok(self.view(&session))
    }

    /// Loads a session whose colleagues this user may manage: its own technician's, or
    /// any of the account for an admin.
    fn load_manageable(&self, who: &Principal, id: &str) -> Result<SupportSession, LiveError> {
        let session = self.load_visible(who, id)?;
        if who.user_id != session.technician_id && who.role != Role::AccountAdmin {
            return Err(LiveError::NotAllowed(
                "only the session's technician or an account admin can manage colleagues".into(),
            ));
        }
        Ok(session)
    }

    /// Takes a colleague out of a session, closing their connection and media.
    pub async fn remove_colleague(
        &self,
        who: &Principal,
        session_id: &str,
        user_id: &str,
    ) -> Result<SessionView, LiveError> {
        let session = self.load_manageable(who, session_id)?;
        if !session.colleagues.iter().any(|c| c.user_id == user_id) {
            return Err(LiveError::NotFound);
        }
        let session = self
            .sessions(&who.account_id)?
            .update(session_id, |s| {
                let mut s = s?;
                s.colleagues.retain(|c| c.user_id != user_id);
                Some(s)
            })?
            .ok_or(LiveError::NotFound)?;
        if let Some(room) = self.rooms().get_mut(session_id) {
            room.technicians
                .retain(|c| c.user_id.as_deref() != Some(user_id));
        }
        self.drop_media_of(session_id, Some(user_id));
        self.store.flush().await?;
        self.broadcast_state(&session);
        Ok(self.view(&session))
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
        if let Some(session) = self.sessions(account_id)?.remove(session_id)? {
            let files = self.store.account(account_id);
            for still in &session.stills {
                files.remove_file(&still_file(session_id, &still.id))?;
            }
            for rec in &session.recordings {
                for part in recording::part_names(session_id, &rec.id) {
                    files.remove_file(&part)?;
                }
            }
        }
        self.transcripts(account_id)?.remove(session_id)?;
        if let Some(keys) = self.invitation_keys(account_id)?.remove(session_id)? {
            for key in keys {
                self.invitations.remove(&key)?;
            }
        }
        Ok(())
    }

    /// Sessions with someone connected.
    pub fn open_sessions(&self) -> usize {
        self.rooms().len()
    }

    /// Ends the open sessions of an account that is being deleted and forgets its
    /// invitation tokens.
    pub fn close_account(&self, account_id: &str) -> Result<(), LiveError> {
        let open: Vec<String> = self
            .rooms()
            .iter()
            .filter(|(_, room)| room.account_id == account_id)
            .map(|(id, _)| id.clone())
            .collect();
        for session_id in open {
            let _ = self.finish(account_id, &session_id, EndReason::Expired);
        }
        // The token index is appliance-wide, outside the account's key: nothing of the
        // account may stay in it once the account is gone.
        self.invitations.retain(|r| r.account_id != account_id)?;
        Ok(())
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

/// A stored file opened for reading at any position.
pub trait ReadSeek: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> ReadSeek for T {}

fn still_file(session_id: &str, still_id: &str) -> String {
    format!("{session_id}-still-{still_id}")
}

/// The largest still accepted: a 12-megapixel JPEG is 3–6 MB.
pub const MAX_STILL_BYTES: usize = 16 << 20;
