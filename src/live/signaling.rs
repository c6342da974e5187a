//! What each signaling message does: the customer's consent, pause, chat and end, and the
//! technician's tools (drawing, pointer, freeze, camera requests, snapshots, recording).

use super::*;
use crate::audit::Actor;

impl Live {
    /// Handles one message from an attached participant; the reply (if any) goes back
    /// only to the sender.
    pub async fn handle(
        &self,
        from: &Attachment,
        message: ClientMessage,
    ) -> Result<Option<ServerMessage>, LiveError> {
        let customer = from.participant.is_customer();
        match message {
            ClientMessage::Ping => return Ok(Some(ServerMessage::Pong)),
            ClientMessage::Watch { .. } | ClientMessage::Join { .. } => {
                return Err(LiveError::Unexpected(
                    "already joined; send this only once, first".into(),
                ));
            }
            ClientMessage::Chat { text } => self.chat(from, &text).await?,
            ClientMessage::End => self.end_by(from).await?,
            ClientMessage::Mute { muted } => self.mute(from, muted),
            ClientMessage::Consent {
                camera,
                microphone,
                recording,
            } if customer => {
                self.consent(from, camera, camera && microphone, recording)
                    .await?
            }
            ClientMessage::Pause { paused } if customer => self.pause(from, paused)?,
            ClientMessage::Capabilities { capabilities } if customer => {
                self.capabilities(from, capabilities)?
            }
            ClientMessage::Consent { .. }
            | ClientMessage::Pause { .. }
            | ClientMessage::Capabilities { .. } => {
                return Err(LiveError::Unexpected(
                    "only the customer can send this message".into(),
                ));
            }
            tool => self.technician_tool(from, tool).await?,
        }
        Ok(None)
    }

    async fn chat(&self, from: &Attachment, text: &str) -> Result<(), LiveError> {
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
            from: speaker(from),
            author: from.name.clone(),
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
        Ok(())
    }

    async fn end_by(&self, from: &Attachment) -> Result<(), LiveError> {
        let reason = match from.participant {
            Participant::Customer => EndReason::Customer,
            Participant::Technician { .. } => EndReason::Technician,
        };
        self.end(&from.account_id, &from.session_id, reason).await?;
        Ok(())
    }

    fn mute(&self, from: &Attachment, muted: bool) {
        let message = ServerMessage::Muted {
            from: speaker(from),
            author: from.name.clone(),
            muted,
        };
        if let Some(room) = self.rooms().get_mut(&from.session_id) {
            // Kept for whoever joins later, so they know who is muted.
            if muted {
                room.muted.insert(from.participant.clone(), message.clone());
            } else {
                room.muted.remove(&from.participant);
            }
            room.broadcast(&message);
        }
    }

    /// The customer's answer to what the technician asked to see and hear; the microphone
    /// and recording only ever come with the camera.
    async fn consent(
        &self,
        from: &Attachment,
        camera: bool,
        microphone: bool,
        recording: bool,
    ) -> Result<(), LiveError> {
        let now = self.clock.now_ms();
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
        let recording = session.consent.as_ref().is_some_and(|c| c.recording);
        if !recording {
            self.stop_recording(&session);
        }
        self.audit.record(
            if camera {
                AuditKind::ConsentGiven
            } else {
                AuditKind::ConsentDeclined
            },
            Actor::account(&from.account_id).at(from.source),
            format!(
                "session {} camera={camera} microphone={microphone} recording={recording}",
                from.session_id,
            ),
        );
        if !camera {
            self.drop_media_of(&from.session_id, &Participant::Customer);
        }
        self.store.flush().await?;
        self.broadcast_state(&session);
        Ok(())
    }

    fn pause(&self, from: &Attachment, paused: bool) -> Result<(), LiveError> {
        let session = self.transition(&from.account_id, &from.session_id, |s| {
            s.paused = paused;
        })?;
        self.broadcast_state(&session);
        Ok(())
    }

    /// What the customer's camera can do (torch, zoom, …), for the technician's controls.
    fn capabilities(
        &self,
        from: &Attachment,
        capabilities: CameraCapabilities,
    ) -> Result<(), LiveError> {
        capabilities.validate().map_err(LiveError::BadMessage)?;
        if let Some(room) = self.rooms().get_mut(&from.session_id) {
            room.to_technicians(&ServerMessage::Capabilities {
                capabilities: capabilities.clone(),
            });
            room.capabilities = Some(capabilities);
        }
        Ok(())
    }

    /// The technician's tools. Observers may watch and chat, nothing more.
    async fn technician_tool(
        &self,
        from: &Attachment,
        message: ClientMessage,
    ) -> Result<(), LiveError> {
        if from.participant.is_customer() {
            return Err(LiveError::Unexpected(
                "only a technician can send this message".into(),
            ));
        }
        let session = self.load(&from.account_id, &from.session_id)?;
        if session.state == SessionState::Ended {
            return Err(LiveError::Ended);
        }
        if from
            .participant
            .user_id()
            .is_some_and(|u| session.observed_by(u))
        {
            return Err(LiveError::NotAllowed(
                "observers can watch and chat but not act in the session".into(),
            ));
        }
        let mut rooms = self.rooms();
        let room = rooms.get_mut(&from.session_id).ok_or(LiveError::NotFound)?;
        match message {
            ClientMessage::Draw { shape } => room.draw(shape)?,
            ClientMessage::Undo => room.undo(),
            ClientMessage::ClearDrawing => room.clear_drawing(),
            ClientMessage::Pointer { at } => room.point(at)?,
            ClientMessage::Camera { request } => {
                request.validate().map_err(LiveError::BadMessage)?;
                room.to_customer(ServerMessage::Camera { request })?;
            }
            ClientMessage::Snapshot => room.ask_for_snapshot()?,
            ClientMessage::Freeze { frozen: true } => room.freeze()?,
            ClientMessage::Freeze { frozen: false } => {
                let unfrozen = room.unfreeze();
                drop(rooms);
                if let Some((still_id, shapes)) = unfrozen {
                    self.keep_drawing_with_still(from, &still_id, shapes)?;
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
                return Err(LiveError::Unexpected(
                    "this message cannot be sent now".into(),
                ));
            }
        }
        Ok(())
    }

    /// The drawing made on a frozen still stays with it in the record.
    fn keep_drawing_with_still(
        &self,
        from: &Attachment,
        still_id: &str,
        shapes: Vec<Shape>,
    ) -> Result<(), LiveError> {
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
        Ok(())
    }
}

fn speaker(from: &Attachment) -> Speaker {
    match from.participant {
        Participant::Customer => Speaker::Customer,
        Participant::Technician { .. } => Speaker::Technician,
    }
}
