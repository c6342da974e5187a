//! What each signaling message does: the customer's consent, pause, chat and end, and the
//! technician's tools (drawing, pointer, freeze, camera requests, snapshots, recording).

use super::*;

impl Live {
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
    pub(super) async fn handle_technician(
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
}
