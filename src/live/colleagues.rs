//! Colleagues invited into a session as participants or observers, by its owner or an
//! account admin.

use super::*;
use crate::audit::Actor;

impl Live {
    /// Invites another technician of the account into a session. Only the session's
    /// technician or an account admin may.
    pub async fn add_colleague(
        &self,
        who: &Principal,
        session_id: &SessionId,
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
            Actor::user(&who.account_id, &who.user_id),
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
    pub(super) fn load_manageable(
        &self,
        who: &Principal,
        id: &SessionId,
    ) -> Result<SupportSession, LiveError> {
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
        session_id: &SessionId,
        user_id: &UserId,
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
        let removed = Participant::Technician {
            user_id: user_id.clone(),
        };
        if let Some(room) = self.rooms().get_mut(session_id) {
            room.technicians.retain(|c| c.participant != removed);
        }
        self.drop_media_of(session_id, &removed);
        self.store.flush().await?;
        self.broadcast_state(&session);
        Ok(self.view(&session))
    }
}
