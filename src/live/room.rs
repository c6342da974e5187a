//! The room a live session occupies while anyone is connected: who is attached, the relay
//! peers and who owns them, the drawing, the frozen still, pending captures, the running
//! recording and who is muted. Nothing here is stored; the store holds the session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::toolkit::{self, CameraCapabilities, Point, Shape, StillPurpose};
use super::{LiveError, RoomFacts, ServerMessage, SessionView, SupportSession};
use crate::audit::Actor;
use crate::clock::UnixMillis;
use crate::ids::{AccountId, SessionId, UserId, random_id};
use crate::media::PeerId;

/// Who a signaling connection or a relay peer belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Participant {
    Customer,
    Technician { user_id: UserId },
}

impl Participant {
    /// The technician's user id; none for the customer.
    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Self::Customer => None,
            Self::Technician { user_id } => Some(user_id),
        }
    }

    pub fn is_customer(&self) -> bool {
        *self == Self::Customer
    }
}

/// One participant's signaling connection to a session.
pub struct Attachment {
    pub conn_id: u64,
    pub session_id: SessionId,
    pub account_id: AccountId,
    pub participant: Participant,
    /// Shown with their chat lines: the technician's display name, or "Customer".
    pub name: String,
    pub source: IpAddr,
}

impl Attachment {
    /// The attachment of a new connection to `session`.
    pub(super) fn to(
        session: SupportSession,
        conn_id: u64,
        participant: Participant,
        name: &str,
        source: IpAddr,
    ) -> Self {
        Self {
            conn_id,
            session_id: session.id,
            account_id: session.account_id,
            participant,
            name: name.to_owned(),
            source,
        }
    }

    /// The participant as the security log names them.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            account_id: Some(&self.account_id),
            user_id: self.participant.user_id().map(UserId::as_str),
            source: Some(self.source),
        }
    }
}

pub(super) struct Connection {
    pub(super) id: u64,
    pub(super) participant: Participant,
    pub(super) tx: mpsc::UnboundedSender<ServerMessage>,
}

pub(super) struct Room {
    pub(super) account_id: AccountId,
    pub(super) technicians: Vec<Connection>,
    pub(super) customer: Option<Connection>,
    /// Relay peers of this session and who owns them.
    pub(super) peers: HashMap<PeerId, Participant>,
    pub(super) drawing: Vec<Shape>,
    /// The still shown while the picture is frozen.
    pub(super) frozen: Option<String>,
    /// Stills asked of the customer's page and not yet uploaded.
    pub(super) captures: HashMap<String, StillPurpose>,
    pub(super) capabilities: Option<CameraCapabilities>,
    /// The recording running now: its id and start.
    pub(super) recording: Option<(String, UnixMillis)>,
    /// Who is muted now, as the message that said so.
    pub(super) muted: HashMap<Participant, ServerMessage>,
}

impl Room {
    pub(super) fn broadcast(&self, message: &ServerMessage) {
        for conn in self.technicians.iter().chain(self.customer.iter()) {
            let _ = conn.tx.send(message.clone());
        }
    }

    pub(super) fn to_technicians(&self, message: &ServerMessage) {
        for conn in &self.technicians {
            let _ = conn.tx.send(message.clone());
        }
    }

    pub(super) fn to_customer(&self, message: ServerMessage) -> Result<(), LiveError> {
        let conn = self.customer.as_ref().ok_or(LiveError::CustomerAbsent)?;
        conn.tx.send(message).map_err(|_| LiveError::CustomerAbsent)
    }

    pub(super) fn facts(&self) -> RoomFacts {
        RoomFacts {
            customer_connected: self.customer.is_some(),
            recording: self.recording.is_some(),
            frozen: self.frozen.clone(),
        }
    }
}

/// Snapshots asked of the customer's page and not yet delivered, at most.
const MAX_PENDING_CAPTURES: usize = 8;

/// The technician's tools on the room's shared state; each tells everyone what changed.
impl Room {
    pub(super) fn draw(&mut self, shape: Shape) -> Result<(), LiveError> {
        shape.validate().map_err(LiveError::BadMessage)?;
        if self.drawing.len() >= toolkit::MAX_SHAPES {
            return Err(LiveError::Unexpected(format!(
                "a drawing has at most {} shapes; clear it first",
                toolkit::MAX_SHAPES
            )));
        }
        self.drawing.push(shape);
        self.broadcast_drawing();
        Ok(())
    }

    pub(super) fn undo(&mut self) {
        self.drawing.pop();
        self.broadcast_drawing();
    }

    pub(super) fn clear_drawing(&mut self) {
        self.drawing.clear();
        self.broadcast_drawing();
    }

    fn broadcast_drawing(&self) {
        self.broadcast(&ServerMessage::Drawing {
            shapes: self.drawing.clone(),
        });
    }

    pub(super) fn point(&self, at: Option<Point>) -> Result<(), LiveError> {
        if at.as_ref().is_some_and(|p| !toolkit::valid_point(p)) {
            return Err(LiveError::BadMessage(
                "positions are fractions of the picture, from 0 to 1".into(),
            ));
        }
        self.broadcast(&ServerMessage::Pointer { at });
        Ok(())
    }

    pub(super) fn ask_for_snapshot(&mut self) -> Result<(), LiveError> {
        if self.captures.len() >= MAX_PENDING_CAPTURES {
            return Err(LiveError::Unexpected(
                "wait for the snapshots already asked for".into(),
            ));
        }
        self.ask_for_capture(StillPurpose::Snapshot)
    }

    /// Asks for the still to freeze on, unless the picture is frozen or one was asked for.
    pub(super) fn freeze(&mut self) -> Result<(), LiveError> {
        if self.frozen.is_none() && !self.captures.values().any(|p| *p == StillPurpose::Freeze) {
            self.ask_for_capture(StillPurpose::Freeze)?;
        }
        Ok(())
    }

    fn ask_for_capture(&mut self, purpose: StillPurpose) -> Result<(), LiveError> {
        let request = random_id();
        self.to_customer(ServerMessage::Capture {
            request: request.clone(),
            purpose,
        })?;
        self.captures.insert(request, purpose);
        Ok(())
    }

    /// Ends the freeze: the frozen still and the drawing made on it, if it was frozen.
    pub(super) fn unfreeze(&mut self) -> Option<(String, Vec<Shape>)> {
        self.captures.retain(|_, p| *p != StillPurpose::Freeze);
        let still_id = self.frozen.take()?;
        Some((still_id, std::mem::take(&mut self.drawing)))
    }
}

pub(super) type Rooms = Arc<Mutex<HashMap<SessionId, Room>>>;

pub(super) fn lock(rooms: &Rooms) -> std::sync::MutexGuard<'_, HashMap<SessionId, Room>> {
    rooms.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn new_room(account_id: &AccountId) -> Room {
    Room {
        account_id: account_id.clone(),
        technicians: Vec::new(),
        customer: None,
        peers: HashMap::new(),
        drawing: Vec::new(),
        frozen: None,
        captures: HashMap::new(),
        capabilities: None,
        recording: None,
        muted: HashMap::new(),
    }
}

pub(super) fn view_in(rooms: &HashMap<SessionId, Room>, session: &SupportSession) -> SessionView {
    let facts = rooms.get(&session.id).map(Room::facts).unwrap_or_default();
    SessionView::of(session, facts)
}
