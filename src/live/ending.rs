//! How sessions end: by a participant, by expiry (the sweep), at shutdown, and when an
//! account is closed.

use super::*;
use crate::audit::Actor;

impl Live {
    /// Ends a session: records why, tells every participant, releases its media and
    /// invalidates its invitation.
    pub async fn end(
        &self,
        account_id: &AccountId,
        session_id: &SessionId,
        reason: EndReason,
    ) -> Result<SessionView, LiveError> {
        let session = self.finish(account_id, session_id, reason)?;
        self.store.flush().await?;
        Ok(self.view(&session))
    }

    pub async fn end_for(
        &self,
        who: &Principal,
        session_id: &SessionId,
    ) -> Result<SessionView, LiveError> {
        self.load_visible(who, session_id)?;
        self.end(&who.account_id, session_id, EndReason::Technician)
            .await
    }

    pub(super) fn finish(
        &self,
        account_id: &AccountId,
        session_id: &SessionId,
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
            Actor::account(account_id),
            format!("session {session_id} ended: {reason:?}"),
        );
        Ok(session)
    }

    /// Ends the open sessions of an account that is being deleted and forgets its
    /// invitation tokens.
    pub fn close_account(&self, account_id: &AccountId) -> Result<(), LiveError> {
        let open: Vec<SessionId> = self
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

    /// The sessions that have a room now, as (account, session) ids.
    fn sessions_with_rooms(&self) -> Vec<(AccountId, SessionId)> {
        self.rooms()
            .iter()
            .map(|(id, room)| (room.account_id.clone(), id.clone()))
            .collect()
    }

    /// Ends every session that has participants; used on shutdown so they are told.
    pub fn shutdown(&self) {
        for (account_id, session_id) in self.sessions_with_rooms() {
            if let Err(e) = self.finish(&account_id, &session_id, EndReason::Shutdown) {
                tracing::warn!(error = %e, %session_id, "could not end session on shutdown");
            }
        }
    }

    /// Ends sessions whose time is up, so that participants still connected are told.
    pub fn sweep(&self) {
        for (account_id, session_id) in self.sessions_with_rooms() {
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
