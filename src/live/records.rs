//! What a session keeps: recordings started and stored, stills and recordings read back
//! by those who may, the session record, and deleting it.

use super::*;
use crate::audit::Actor;

impl Live {
    pub(super) fn start_recording(
        &self,
        session: &SupportSession,
        by: &Attachment,
    ) -> Result<(), LiveError> {
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
            Actor {
                account_id: Some(&session.account_id),
                user_id: by.participant.user_id().map(UserId::as_str),
                source: None,
            },
            format!("session {} recording {recording_id}", session.id),
        );
        Ok(())
    }

    pub(super) fn stop_recording(&self, session: &SupportSession) {
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
    pub(super) fn recording_done(
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
                    tracing::error!(error = %e, %session_id, "recording could not be stored");
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
                tracing::error!(error = %e, %session_id, "recording could not be recorded");
                return;
            }
            audit.record(
                AuditKind::RecordingStored,
                Actor::account(&account_id),
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

    /// A still of a session the user may see, with its image.
    pub fn still_for(
        &self,
        who: &Principal,
        session_id: &SessionId,
        still_id: &str,
    ) -> Result<(Still, Vec<u8>), LiveError> {
        let session = self.load_visible(who, session_id)?;
        self.still_of(&session, still_id)
    }

    pub(super) fn still_of(
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
    pub fn recording_for(
        &self,
        who: &Principal,
        session_id: &SessionId,
        recording_id: &str,
    ) -> Result<RecordingFile, LiveError> {
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
        Ok(RecordingFile { recording, parts })
    }

    /// Everything about a session, for its record page.
    pub fn record_for(
        &self,
        who: &Principal,
        session_id: &SessionId,
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

    /// The account's session records matching a scope, for export and deletion.
    pub fn records(
        &self,
        account_id: &AccountId,
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
    pub fn delete_record(
        &self,
        account_id: &AccountId,
        session_id: &SessionId,
    ) -> Result<(), LiveError> {
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
}
