//! The customer's side of a session: the invitation and PIN (counted against guessing),
//! joining with the device binding, and what the page may do afterwards — publish its
//! camera, restart or leave its connection, upload and see stills — each proven with the
//! invitation token and the device secret.

use std::net::{IpAddr, SocketAddr};

use tokio::sync::mpsc;

use super::*;
use crate::audit::Actor;

/// Requests from a device that did not join, per session: when the current minute began
/// and how many came after the one audited.
pub(super) struct Refusals {
    since_ms: UnixMillis,
    more: u32,
}

const REFUSAL_WINDOW_MS: u64 = 60_000;
/// Sessions whose refusals are remembered before the stale ones are dropped.
const MAX_REFUSAL_WINDOWS: usize = 10_000;

impl Live {
    /// Resolves an invitation token to its session, counting failures per source.
    pub fn resolve_invitation(
        &self,
        token: &str,
        source: IpAddr,
    ) -> Result<SupportSession, LiveError> {
        let Some(guess) = self.throttle.begin(source) else {
            return Err(LiveError::Throttled);
        };
        let found = match self.invitations.get(&sha256_hex(token.as_bytes()))? {
            Some(r) => Some(self.load(&r.account_id, &r.session_id)?),
            None => None,
        };
        match found {
            Some(session) if session.state != SessionState::Ended => Ok(session),
            // A real token of a session that has ended is no guess: the customer's page
            // says goodbye with it after every session (leaving the relay), and old links
            // get opened again. Counting it would lock out a shared address (a NAT) after
            // ten ordinary sessions and fill the security log with false alarms.
            Some(_) => {
                drop(guess);
                Err(LiveError::InvitationInvalid)
            }
            None => {
                self.guess_failed(
                    guess,
                    AuditKind::InvitationRejected,
                    source,
                    "unknown invitation token",
                );
                Err(LiveError::InvitationInvalid)
            }
        }
    }

    /// Exchanges a PIN for a customer capability token of the same session.
    pub async fn exchange_pin(&self, pin: &str, source: IpAddr) -> Result<String, LiveError> {
        let Some(guess) = self.throttle.begin(source) else {
            return Err(LiveError::Throttled);
        };
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
            self.guess_failed(
                guess,
                AuditKind::PinRejected,
                source,
                "wrong or expired PIN",
            );
            return Err(LiveError::PinInvalid);
        };
        let token = self.issue_invitation(&session)?;
        self.store.flush().await?;
        Ok(token)
    }

    /// A fresh link's token for a session still waiting for its customer, to be sent by
    /// e-mail or SMS (each message its own token, like a PIN's). Only the session's
    /// technician and the account's admins send invitations.
    pub async fn token_to_send(
        &self,
        who: &Principal,
        session_id: &SessionId,
    ) -> Result<(String, SessionView), LiveError> {
        let session = self.load_visible(who, session_id)?;
        if who.user_id != session.technician_id && who.role != Role::AccountAdmin {
            return Err(LiveError::NotAllowed(
                "only the session's technician sends its invitation".into(),
            ));
        }
        match session.state {
            SessionState::Waiting if self.clock.now_ms() < session.invitation_expires_ms => {}
            SessionState::Waiting => {
                return Err(LiveError::NotAllowed(
                    "the invitation has expired; start a new session".into(),
                ));
            }
            SessionState::Ended => return Err(LiveError::Ended),
            _ => return Err(LiveError::AlreadyJoined),
        }
        let token = self.issue_invitation(&session)?;
        self.store.flush().await?;
        Ok((token, self.view(&session)))
    }

    /// A new capability token for the session. Its stored key is noted with the session,
    /// so that the token stays known (a dead link of an ended session, not a guess) until
    /// the session's record is deleted.
    pub(super) fn issue_invitation(&self, session: &SupportSession) -> Result<String, StoreError> {
        let token = random_token();
        let key = sha256_hex(token.as_bytes());
        self.invitations.put(
            &key,
            &InvitationRef {
                account_id: session.account_id.clone(),
                session_id: session.id.clone(),
            },
        )?;
        self.invitation_keys(&session.account_id)?
            .update(&session.id, |keys| {
                let mut keys = keys.unwrap_or_default();
                keys.push(key.clone());
                Some(keys)
            })?;
        Ok(token)
    }

    fn guess_failed(
        &self,
        guess: crate::audit::GuessAttempt<'_>,
        kind: AuditKind,
        source: IpAddr,
        detail: impl Into<String>,
    ) {
        self.audit.record(kind, Actor::stranger(source), detail);
        if guess.failed() {
            self.audit
                .source_throttled(source, "invitation or PIN guessing");
        }
    }

    /// Connects the customer's signaling socket. Only one customer device at a time, and
    /// the device that joined keeps its place: it proves itself with the device secret
    /// it was given. Another device may join only while that one is away, and then as a
    /// new participant — nothing the first agreed to carries over.
    pub fn attach_customer(
        &self,
        token: &str,
        device: Option<&str>,
        user_agent: Option<&str>,
        source: IpAddr,
    ) -> Result<(Attachment, mpsc::UnboundedReceiver<ServerMessage>), LiveError> {
        let session = self.resolve_invitation(token, source)?;
        let same_device = session.device_key.is_some()
            && device.map(|d| sha256_hex(d.as_bytes())) == session.device_key;
        let (tx, rx) = mpsc::unbounded_channel();
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut rooms = self.rooms();
            let room = rooms
                .entry(session.id.clone())
                .or_insert_with(|| new_room(&session.account_id));
            // The same device coming back (reload, network drop) takes its place again,
            // and its stale socket is let go; another device is refused while it is here.
            if room.customer.is_some() && !same_device {
                return Err(LiveError::AlreadyJoined);
            }
            room.customer = Some(Connection {
                id: conn_id,
                participant: Participant::Customer,
                tx,
            });
        }
        let now = self.clock.now_ms();
        let described = user_agent.map(toolkit::describe_device);
        let new_key = (!same_device).then(random_token);
        let replaced = session.device_key.is_some() && !same_device;
        let joined = self.transition(&session.account_id, &session.id, |s| {
            if s.state == SessionState::Waiting {
                s.state = SessionState::Joined;
                s.joined_ms = Some(now);
            }
            if let Some(key) = &new_key {
                s.device_key = Some(sha256_hex(key.as_bytes()));
                s.customer_device.clone_from(&described);
            }
            if replaced {
                s.consent_log.push(ConsentEvent {
                    at_ms: now,
                    event: ConsentChange::NewDevice,
                    camera: false,
                    microphone: false,
                    recording: false,
                });
                s.consent = None;
                s.paused = false;
                if matches!(
                    s.state,
                    SessionState::Consented | SessionState::Live | SessionState::Declined
                ) {
                    s.state = SessionState::Joined;
                }
            } else if let Some(c) = s.consent.as_ref().filter(|c| c.camera) {
                // Coming back after consent: sharing resumes under the consent given.
                s.consent_log.push(ConsentEvent {
                    at_ms: now,
                    event: ConsentChange::Resumed,
                    camera: c.camera,
                    microphone: c.microphone,
                    recording: c.recording,
                });
            }
        });
        let session = match joined {
            Ok(s) => s,
            Err(e) => {
                self.let_go_of_customer(&session.id, conn_id);
                return Err(e);
            }
        };
        if replaced {
            // The first device's media and recording ran under its consent; they end.
            self.stop_recording(&session);
            self.drop_media_of(&session.id, &Participant::Customer);
            let device = session
                .customer_device
                .as_deref()
                .unwrap_or("unknown device");
            self.audit.record(
                AuditKind::CustomerDeviceChanged,
                Actor::account(&session.account_id).at(source),
                format!(
                    "session {}: another device joined with the invitation ({device}); consent asked afresh",
                    session.id,
                ),
            );
        }
        // Once the customer is in, the PIN has done its job; nobody else may use it.
        self.release_pin(&session.id)?;
        if let Some(key) = new_key
            && let Some(room) = self.rooms().get(&session.id)
            && let Some(conn) = room.customer.as_ref().filter(|c| c.id == conn_id)
        {
            let _ = conn.tx.send(ServerMessage::Device { key });
        }
        self.broadcast_state(&session);
        if let Ok(lines) = self.transcript(&session.account_id, &session.id)
            && !lines.is_empty()
            && let Some(room) = self.rooms().get(&session.id)
            && let Some(conn) = room.customer.as_ref().filter(|c| c.id == conn_id)
        {
            let _ = conn.tx.send(ServerMessage::Transcript { lines });
        }
        if let Some(room) = self.rooms().get(&session.id)
            && let Some(conn) = room.customer.as_ref().filter(|c| c.id == conn_id)
            && !room.drawing.is_empty()
        {
            let _ = conn.tx.send(ServerMessage::Drawing {
                shapes: room.drawing.clone(),
            });
        }
        self.send_muted_to(&session.id, conn_id);
        Ok((
            Attachment::to(session, conn_id, Participant::Customer, "Customer", source),
            rx,
        ))
    }

    fn let_go_of_customer(&self, session_id: &SessionId, conn_id: u64) {
        if let Some(room) = self.rooms().get_mut(session_id)
            && room.customer.as_ref().is_some_and(|c| c.id == conn_id)
        {
            room.customer = None;
        }
    }

    /// The session of a request from the customer's page after it joined (media, stills):
    /// the invitation token and the device secret of the device that joined.
    fn customer_session(
        &self,
        proof: &CustomerProof,
        source: IpAddr,
    ) -> Result<SupportSession, LiveError> {
        let session = self.resolve_invitation(&proof.token, source)?;
        let proven = session.device_key.is_some()
            && proof.device.as_ref().map(|d| sha256_hex(d.as_bytes())) == session.device_key;
        if !proven {
            self.device_refused(&session, source);
            return Err(LiveError::WrongDevice);
        }
        Ok(session)
    }

    /// Audits a request from a device that did not join: the first of a session in a
    /// minute, with how many more came in the minute before. A second holder of the link
    /// that keeps trying (a page retrying, a script) would otherwise write an entry per
    /// request, without bound.
    fn device_refused(&self, session: &SupportSession, source: IpAddr) {
        let now = self.clock.now_ms();
        let more = {
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if refusals.len() > MAX_REFUSAL_WINDOWS {
                refusals.retain(|_, r| now < r.since_ms + REFUSAL_WINDOW_MS);
            }
            match refusals.get_mut(&session.id) {
                Some(r) if now < r.since_ms + REFUSAL_WINDOW_MS => {
                    r.more += 1;
                    return;
                }
                Some(r) => {
                    std::mem::replace(
                        r,
                        Refusals {
                            since_ms: now,
                            more: 0,
                        },
                    )
                    .more
                }
                None => {
                    refusals.insert(
                        session.id.clone(),
                        Refusals {
                            since_ms: now,
                            more: 0,
                        },
                    );
                    0
                }
            }
        };
        let earlier = match more {
            0 => String::new(),
            n => format!(" ({n} more refused in the minute before)"),
        };
        self.audit.record(
            AuditKind::InvitationDeviceRefused,
            Actor::account(&session.account_id).at(source),
            format!(
                "session {}: the invitation used from a device that did not join{earlier}",
                session.id
            ),
        );
    }

    /// The customer's page publishes its camera (WHIP). Requires camera consent.
    pub fn publish(
        &self,
        proof: &CustomerProof,
        source: IpAddr,
        offer: &str,
        announce: SocketAddr,
    ) -> Result<(SessionId, PeerId, String), LiveError> {
        let session = self.customer_session(proof, source)?;
        let Some(consent) = session.consent.as_ref().filter(|c| c.camera) else {
            return Err(LiveError::NoConsent);
        };
        let (peer, answer) = self
            .media
            .negotiate(
                &session.id,
                PeerRole::Publisher,
                consent.microphone,
                offer,
                announce,
            )
            .inspect_err(|e| self.media_offer_failed(&session, source, e))?;
        self.register_peer(&session, peer, Participant::Customer);
        Ok((session.id, peer, answer))
    }

    /// The customer's ICE restart (WHIP `PATCH`), from the device that joined.
    pub async fn restart_customer_media(
        &self,
        proof: &CustomerProof,
        source: IpAddr,
        peer: PeerId,
        offer: &str,
    ) -> Result<String, LiveError> {
        let session = self.customer_session(proof, source)?;
        self.restart_media(&session.id, peer, &Participant::Customer, offer)
            .await
    }

    /// The customer's page leaves the relay (WHIP `DELETE`), from the device that joined.
    /// After the session has ended this is a goodbye, not an error worth a log entry.
    pub fn customer_leaves_media(
        &self,
        proof: &CustomerProof,
        source: IpAddr,
        peer: PeerId,
    ) -> Result<(), LiveError> {
        let session = self.customer_session(proof, source)?;
        self.leave_media(&session.id, peer, &Participant::Customer)
    }

    /// Stores a still the customer's page took because a technician asked for it.
    pub fn store_still(
        &self,
        proof: &CustomerProof,
        source: IpAddr,
        request: &str,
        image: &[u8],
    ) -> Result<Still, LiveError> {
        let session = self.customer_session(proof, source)?;
        let purpose = self
            .rooms()
            .get_mut(&session.id)
            .and_then(|room| room.captures.remove(request));
        let Some(purpose) = purpose else {
            self.audit.record(
                AuditKind::UnexpectedUpload,
                Actor::account(&session.account_id).at(source),
                format!("session {}: a still nobody asked for", session.id),
            );
            return Err(LiveError::NotFound);
        };
        let content_type = match imagesize::image_type(image) {
            Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
            Ok(imagesize::ImageType::Png) => "image/png",
            Ok(imagesize::ImageType::Webp) => "image/webp",
            _ => "",
        };
        let size = imagesize::blob_size(image).ok();
        let (Some(size), false) = (size, content_type.is_empty()) else {
            self.audit.record(
                AuditKind::UnexpectedUpload,
                Actor::account(&session.account_id).at(source),
                format!(
                    "session {}: a still that is not a JPEG, PNG or WebP image",
                    session.id
                ),
            );
            return Err(LiveError::BadMessage(
                "a still must be a JPEG, PNG or WebP image".into(),
            ));
        };
        let drawing = self
            .rooms()
            .get(&session.id)
            .map(|r| r.drawing.clone())
            .unwrap_or_default();
        let still = Still {
            id: random_id(),
            purpose,
            at_ms: self.clock.now_ms(),
            content_type: content_type.to_owned(),
            width: size.width as u32,
            height: size.height as u32,
            bytes: image.len() as u64,
            annotations: if purpose == StillPurpose::Snapshot {
                drawing
            } else {
                Vec::new()
            },
        };
        self.store
            .account(&session.account_id)
            .put_file(&still_file(&session.id, &still.id), image)?;
        let session = self.transition(&session.account_id, &session.id, |s| {
            s.stills.push(still.clone());
        })?;
        if let Some(room) = self.rooms().get_mut(&session.id) {
            if purpose == StillPurpose::Freeze {
                // Drawing on the still starts from a clean picture.
                room.frozen = Some(still.id.clone());
                room.drawing.clear();
                room.broadcast(&ServerMessage::Drawing { shapes: Vec::new() });
            }
            room.broadcast(&ServerMessage::Still {
                still: still.clone(),
            });
        }
        self.broadcast_state(&session);
        Ok(still)
    }

    /// The customer sees the stills of their own session while it lasts.
    pub fn still_for_customer(
        &self,
        proof: &CustomerProof,
        source: IpAddr,
        still_id: &str,
    ) -> Result<(Still, Vec<u8>), LiveError> {
        let session = self.customer_session(proof, source)?;
        self.still_of(&session, still_id)
    }
}
