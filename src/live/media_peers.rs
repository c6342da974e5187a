//! The session's relay peers: technicians subscribing (WHEP), ICE restarts and leaving by
//! their owner only, what the relay reports back, and ending a participant's media.

use super::*;
use crate::audit::Actor;

impl Live {
    /// Ends the relay peers a participant owns in a session (`None`: the customer).
    pub(super) fn drop_media_of(&self, session_id: &SessionId, owner: &Participant) {
        let peers: Vec<PeerId> = self
            .rooms()
            .get_mut(session_id)
            .map(|room| {
                let theirs: Vec<PeerId> = room
                    .peers
                    .iter()
                    .filter(|(_, o)| *o == owner)
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

    /// A technician's console receives the session's media (WHEP).
    pub fn subscribe(
        &self,
        who: &Principal,
        session_id: &SessionId,
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
        self.register_peer(
            &session,
            peer,
            Participant::Technician {
                user_id: who.user_id.clone(),
            },
        );
        Ok((peer, answer))
    }

    pub(super) fn media_offer_failed(
        &self,
        session: &SupportSession,
        source: IpAddr,
        error: &MediaError,
    ) {
        self.audit.record(
            AuditKind::MalformedMediaOffer,
            Actor::account(&session.account_id).at(source),
            format!("session {}: {error}", session.id),
        );
    }

    pub(super) fn register_peer(&self, session: &SupportSession, peer: PeerId, owner: Participant) {
        let mut rooms = self.rooms();
        let room = rooms
            .entry(session.id.clone())
            .or_insert_with(|| new_room(&session.account_id));
        if owner.is_customer() {
            // A republishing customer (reload) replaces its earlier peer in the relay.
            room.peers.retain(|_, o| !o.is_customer());
        }
        room.peers.insert(peer, owner);
    }

    /// An ICE restart (WHIP/WHEP `PATCH` with a new offer): the customer may restart only
    /// its own peer, a technician only theirs.
    pub async fn restart_media(
        &self,
        session_id: &SessionId,
        peer: PeerId,
        owner: &Participant,
        offer: &str,
    ) -> Result<String, LiveError> {
        let owned = self
            .rooms()
            .get(session_id)
            .and_then(|room| room.peers.get(&peer))
            .is_some_and(|o| o == owner);
        if !owned {
            return Err(LiveError::NotFound);
        }
        Ok(self.media.renegotiate(peer, offer).await?)
    }

    /// Ends a relay peer (WHIP/WHEP `DELETE`). The customer may end only its own peer,
    /// a technician only theirs.
    pub fn leave_media(
        &self,
        session_id: &SessionId,
        peer: PeerId,
        owner: &Participant,
    ) -> Result<(), LiveError> {
        let mut rooms = self.rooms();
        let room = rooms.get_mut(session_id).ok_or(LiveError::NotFound)?;
        match room.peers.get(&peer) {
            Some(o) if o == owner => {
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
                let room = SessionId::from(room);
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
                let room = SessionId::from(room);
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
                let Some(r) = rooms.get(room.as_str()) else {
                    return;
                };
                let Some(owner) = r.peers.get(&peer).filter(|o| !o.is_customer()) else {
                    return;
                };
                for conn in r.technicians.iter().filter(|c| c.participant == *owner) {
                    let _ = conn.tx.send(ServerMessage::Bandwidth { video: !suspended });
                }
            }
            MediaEvent::Connected { .. } | MediaEvent::MalformedFlood { .. } => {}
        }
    }

    pub(super) fn peer_account(&self, room: &str, peer: PeerId) -> Option<AccountId> {
        let rooms = self.rooms();
        let r = rooms.get(room)?;
        r.peers.contains_key(&peer).then(|| r.account_id.clone())
    }
}
