//! Peers joining, renegotiating and leaving a worker, and a room's recording switched on
//! and off.

use super::forward::request_keyframe;
use super::*;

impl Relay {
    pub(super) fn renegotiate(
        &mut self,
        id: PeerId,
        offer: SdpOffer,
    ) -> Result<String, MediaError> {
        let peer = self
            .peers
            .get_mut(&id)
            .filter(|p| p.rtc.is_alive())
            .ok_or(MediaError::UnknownPeer)?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| MediaError::InvalidOffer(e.to_string()))?;
        // An ICE restart brings a new ufrag; the new path's checks must reach this worker.
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        tell_all(&self.workers, || Command::Route(ufrag.as_str().into(), id));
        // Media resumes on the new path with a keyframe for whoever watches.
        peer.awaiting_keyframe = true;
        queue(&mut self.queued, id, peer);
        Ok(answer.to_sdp_string())
    }

    pub(super) fn record(&mut self, room: &str, sink: Option<Box<dyn RecordingSink>>) {
        let Some(name) = self.rooms.get_key_value(room).map(|(name, _)| name.clone()) else {
            if let Some(sink) = sink {
                // Nobody is in the room: an empty recording ends at once.
                sink.finish(None, crate::webm::Summary::default());
            }
            return;
        };
        let Some(entry) = self.rooms.get_mut(&name) else {
            return;
        };
        if let Some(old) = entry.recording.take() {
            old.finish();
        }
        if let Some(sink) = sink {
            entry.recording = Some(Recording::new(sink));
            // The recording starts on a keyframe; ask for one now rather than wait.
            if let Some(id) = entry.publisher
                && let Some(publisher) = self.peers.get_mut(&id)
            {
                publisher.last_keyframe_requests.clear();
                let all = [
                    None,
                    Some(layers::Layer::Low.rid()),
                    Some(layers::Layer::High.rid()),
                ];
                request_keyframe(publisher, &all, Instant::now());
                queue(&mut self.queued, id, publisher);
            }
        }
    }

    pub(super) fn add(&mut self, new: NewPeer) {
        let room: Arc<str> = match self.rooms.get_key_value(new.room.as_str()) {
            Some((name, _)) => name.clone(),
            None => Arc::from(new.room.as_str()),
        };
        let entry = self.rooms.entry(room.clone()).or_default();
        match new.role {
            PeerRole::Publisher => {
                // A new publisher (e.g. after a reload) replaces the old one.
                if let Some(old) = entry.publisher.replace(new.id) {
                    self.disconnect(old);
                }
            }
            PeerRole::Subscriber => entry.subscribers.push(new.id),
        }
        self.stats.peers.fetch_add(1, Ordering::Relaxed);
        self.peers.insert(
            new.id,
            Peer {
                room,
                role: new.role,
                sends_audio: new.sends_audio,
                rtc: new.rtc,
                local: new.local,
                local_tcp: new.local_tcp,
                deadline: Instant::now(),
                scheduled: None,
                queued: false,
                mids: Vec::new(),
                awaiting_keyframe: true,
                video_seen: false,
                layers_seen: Vec::new(),
                last_keyframe_requests: Vec::new(),
                remote: None,
                sources: Vec::new(),
                lost_since: None,
                layer: None,
                target_layer: Some(layers::Layer::Low),
                time_shift: 0,
                last_video_time: None,
            },
        );
        if let Some(peer) = self.peers.get_mut(&new.id) {
            queue(&mut self.queued, new.id, peer);
        }
    }

    pub(super) fn disconnect(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            // From now on it takes no datagram; the ones still on their way are late.
            self.junk
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .departed(&peer.sources, Instant::now());
            peer.rtc.disconnect();
            queue(&mut self.queued, id, peer);
        }
    }

    /// Drops peers whose connection ended and tells the appliance.
    pub(super) fn reap(&mut self) {
        if self.dead.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.dead) {
            let Some(peer) = self.peers.remove(&id) else {
                continue;
            };
            self.junk
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .departed(&peer.sources, Instant::now());
            if let Some(room) = self.rooms.get_mut(&peer.room) {
                if room.publisher == Some(id) {
                    room.publisher = None;
                }
                room.subscribers.retain(|s| *s != id);
                if room.publisher.is_none()
                    && room.subscribers.is_empty()
                    && let Some(room) = self.rooms.remove(&peer.room)
                    && let Some(recording) = room.recording
                {
                    recording.finish();
                }
            }
            tell_all(&self.workers, || Command::Forget(id));
            self.placement
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .leave(&peer.room);
            self.stats.peers.fetch_sub(1, Ordering::Relaxed);
            let _ = self.events.send(MediaEvent::Disconnected {
                room: peer.room.to_string(),
                peer: id,
                role: peer.role,
            });
        }
    }
}
