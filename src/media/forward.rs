//! The packet path: a datagram to its peer, each due peer polled, and what one peer
//! produced (media, keyframe requests) forwarded to the others in its room.

use super::*;

impl Relay {
    /// Hands one datagram to its peer: the one the routes point to, or
    /// (when that one does not take it, e.g. on a path it has not confirmed yet) whichever
    /// of this worker's peers does.
    pub(super) fn receive(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        routed: PeerId,
        bytes: &[u8],
    ) {
        let Ok(contents) = bytes.try_into() else {
            tracing::debug!(%source, len = bytes.len(), "unrecognised media datagram");
            self.junk(source);
            return;
        };
        let now = Instant::now();
        let mut input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination: self.socket_addr,
                contents,
            },
        );
        let id = match self.peers.get(&routed) {
            Some(peer) if peer.rtc.accepts(&input) => Some(routed),
            _ => self
                .peers
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(id, _)| *id),
        };
        let Some((id, peer)) = id.and_then(|id| Some((id, self.peers.get_mut(&id)?))) else {
            tracing::debug!(%source, "media datagram for no known peer");
            self.junk(source);
            return;
        };
        if let Input::Receive(_, receive) = &mut input {
            receive.destination = match proto {
                Protocol::Udp => peer.local,
                _ => peer.local_tcp.unwrap_or(peer.local),
            };
        }
        peer.remote = Some(source);
        if !peer.sources.contains(&source) && peer.sources.len() < MAX_PEER_SOURCES {
            peer.sources.push(source);
        }
        // A frame accepted without a route (routed ones were marked on arrival).
        if proto == Protocol::Tcp
            && let Some(conn) = self.tcp.get_mut(&source)
        {
            conn.bound = true;
        }
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(error = %e, %source, "peer failed on input");
            peer.rtc.disconnect();
        }
        queue(&mut self.queued, id, peer);
    }

    /// Advances the peers that are due, got input or were written to (not every peer:
    /// with 120 sessions that saved ~13 % of the relay's CPU), sends what they produce,
    /// forwards media between them, and returns when the loop must wake next.
    pub(super) fn drive(&mut self, now: Instant) -> Instant {
        let grace = self.reconnect_grace;
        while let Some((at, id)) = self.timers.pop_due(now) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue;
            }
            peer.scheduled = None;
            // Lost for longer than the grace period: it is not coming back.
            if peer
                .lost_since
                .is_some_and(|lost| now.duration_since(lost) >= grace)
            {
                peer.rtc.disconnect();
            }
            queue(&mut self.queued, id, peer);
        }
        let mut polling = std::mem::take(&mut self.polling);
        let mut work = std::mem::take(&mut self.work);
        while !self.queued.is_empty() {
            std::mem::swap(&mut self.queued, &mut polling);
            for id in polling.drain(..) {
                let Some(peer) = self.peers.get_mut(&id) else {
                    continue;
                };
                peer.queued = false;
                let out = Out {
                    socket: &self.socket,
                    tcp: match self.workers.first() {
                        Some(first) if self.index != 0 => TcpOut::Worker0(first),
                        _ => TcpOut::Own(&self.tcp),
                    },
                };
                // Due now: the timeout first (also for a peer polled again in this turn
                // because it was written to, as str0m packetises on a timeout). str0m's
                // pacer then lets one packet out per poll and asks for a timeout a
                // microsecond later: answering it here once the clock has passed it lets a
                // frame's packets leave in this turn rather than one per turn of the loop
                // (each with a wait and a timer push); its spacing is kept, since only a
                // timeout that is due is answered.
                let mut at = now;
                for _ in 0..=MAX_PACER_DRAIN {
                    if peer.deadline <= at
                        && peer.rtc.is_alive()
                        && let Err(e) = peer.rtc.handle_input(Input::Timeout(at))
                    {
                        tracing::debug!(error = %e, peer = id.0, "peer failed on timeout");
                        peer.rtc.disconnect();
                    }
                    poll_peer(id, peer, out, &self.events, &self.stats, &mut work);
                    at = Instant::now();
                    if peer.deadline > at || !peer.rtc.is_alive() {
                        break;
                    }
                }
                if !peer.rtc.is_alive() {
                    self.dead.push(id);
                    continue;
                }
                // Visited at least once a second, for the grace period's expiry.
                let visit = peer.deadline.min(now + PEER_VISIT);
                if peer.scheduled.is_none_or(|at| visit < at) {
                    peer.scheduled = Some(visit);
                    self.timers.schedule(visit, id);
                }
            }
            for item in work.drain(..) {
                self.propagate(item, now);
            }
        }
        self.polling = polling;
        self.work = work;
        self.reap();
        if self.timers.len() > 4 * self.peers.len() + 1024 {
            self.timers.compact(
                self.peers
                    .iter()
                    .filter_map(|(id, p)| p.scheduled.map(|at| (at, *id))),
            );
        }
        if self.index == 0 && now >= self.next_sweep {
            self.next_sweep = now + Duration::from_secs(1);
            self.tcp
                .retain(|_, c| c.bound || c.opened.elapsed() < tcp::UNBOUND_TIMEOUT);
            self.stats
                .tcp_connections
                .store(self.tcp.len() as u64, Ordering::Relaxed);
        }
        self.timers
            .next()
            .unwrap_or(now + IDLE_WAKEUP)
            .min(now + IDLE_WAKEUP)
    }

    fn propagate(&mut self, item: Propagate, now: Instant) {
        match item {
            Propagate::Forward {
                from,
                role,
                room,
                kind,
                mut data,
            } => {
                let Some(room) = self.rooms.get_mut(&room) else {
                    return;
                };
                // A recording starts (and changes layers) on a keyframe: ask until one comes.
                let recording_waits = room
                    .recording
                    .as_mut()
                    .and_then(|recording| recording.push(from, role, kind, &data, now));
                // Video goes from the customer to the technicians; audio from anyone to
                // everyone else in the room.
                let mut targets = room
                    .subscribers
                    .iter()
                    .chain(room.publisher.iter().filter(|_| kind == MediaKind::Audio))
                    .filter(|id| **id != from)
                    .peekable();
                let mut wants_keyframe: Vec<Option<Rid>> = recording_waits.into_iter().collect();
                while let Some(target_id) = targets.next() {
                    let Some(target) = self.peers.get_mut(target_id) else {
                        continue;
                    };
                    let mut time = data.time;
                    if kind == MediaKind::Video {
                        match forward_video(target, &data) {
                            VideoDecision::Forward(t, keyframe_for) => {
                                time = t;
                                wants_keyframe.extend(keyframe_for);
                            }
                            VideoDecision::Skip => continue,
                            VideoDecision::NeedKeyframe(rid) => {
                                wants_keyframe.push(rid);
                                continue;
                            }
                        }
                    }
                    let Some(mid) = target.mid_of(kind) else {
                        continue;
                    };
                    let Some(writer) = target.rtc.writer(mid) else {
                        continue;
                    };
                    let Some(pt) = writer.match_params(data.params) else {
                        continue;
                    };
                    let bytes = data.data.len() as u64;
                    // The last technician takes the frame itself; only the others need a copy.
                    let frame = match targets.peek() {
                        Some(_) => data.data.clone(),
                        None => std::mem::take(&mut data.data),
                    };
                    let written = writer.write(pt, data.network_time, time, frame);
                    queue(&mut self.queued, *target_id, target);
                    if let Err(e) = written {
                        tracing::debug!(error = %e, peer = target_id.0, "forwarding failed");
                        target.rtc.disconnect();
                    } else {
                        // Frames, as forwarded to each peer (str0m packetises them).
                        self.stats.packets_forwarded.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .bytes_forwarded
                            .fetch_add(bytes, Ordering::Relaxed);
                    }
                }
                if !wants_keyframe.is_empty()
                    && let Some(id) = room.publisher
                    && let Some(publisher) = self.peers.get_mut(&id)
                {
                    request_keyframe(publisher, &wants_keyframe, now);
                    queue(&mut self.queued, id, publisher);
                }
            }
            Propagate::KeyframeWanted { room } => {
                let publisher = self.rooms.get(&room).and_then(|r| r.publisher);
                if let Some(id) = publisher
                    && let Some(publisher) = self.peers.get_mut(&id)
                {
                    let all = [
                        None,
                        Some(layers::Layer::Low.rid()),
                        Some(layers::Layer::High.rid()),
                    ];
                    request_keyframe(publisher, &all, now);
                    queue(&mut self.queued, id, publisher);
                }
            }
        }
    }
}

/// Where a worker's ICE-TCP frames go: worker 0 owns the connections.
#[derive(Clone, Copy)]
enum TcpOut<'a> {
    Own(&'a HashMap<SocketAddr, tcp::TcpConn>),
    Worker0(&'a mpsc::UnboundedSender<Command>),
}

/// Where a worker's output goes: datagrams to its socket, ICE-TCP frames as [`TcpOut`]
/// says.
#[derive(Clone, Copy)]
struct Out<'a> {
    socket: &'a std::net::UdpSocket,
    tcp: TcpOut<'a>,
}

/// Takes everything a peer has to send or report, until it names its next deadline.
fn poll_peer(
    id: PeerId,
    peer: &mut Peer,
    out: Out<'_>,
    events: &mpsc::UnboundedSender<MediaEvent>,
    stats: &MediaStats,
    work: &mut Vec<Propagate>,
) {
    let Out { socket, tcp } = out;
    while peer.rtc.is_alive() {
        let output = match peer.rtc.poll_output() {
            Ok(output) => output,
            Err(e) => {
                tracing::debug!(error = %e, peer = id.0, "peer failed");
                peer.rtc.disconnect();
                break;
            }
        };
        match output {
            Output::Timeout(at) => {
                peer.deadline = at;
                return;
            }
            Output::Transmit(t) => {
                stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                match Sent::of(&t.contents) {
                    Sent::Media => stats.media_packets_sent.fetch_add(1, Ordering::Relaxed),
                    Sent::Padding => stats.padding_packets_sent.fetch_add(1, Ordering::Relaxed),
                    Sent::Control => 0,
                };
                if t.proto == Protocol::Tcp {
                    match tcp {
                        TcpOut::Own(conns) => {
                            if let Some(conn) = conns.get(&t.destination) {
                                conn.send(&t.contents);
                            }
                        }
                        TcpOut::Worker0(first) => {
                            let frame = Command::TcpSend(t.destination, t.contents.into());
                            let _ = first.send(frame);
                        }
                    }
                } else {
                    // A full socket buffer drops the datagram, as the network would (the
                    // socket is non-blocking).
                    let _ = socket.send_to(&t.contents, t.destination);
                }
            }
            Output::Event(event) => handle_event(id, peer, event, events, work),
        }
    }
}

fn handle_event(
    id: PeerId,
    peer: &mut Peer,
    event: Event,
    events: &mpsc::UnboundedSender<MediaEvent>,
    work: &mut Vec<Propagate>,
) {
    match event {
        Event::Connected => {
            let _ = events.send(MediaEvent::Connected {
                room: peer.room.to_string(),
                peer: id,
                role: peer.role,
                source: peer.remote,
            });
            if peer.role == PeerRole::Subscriber {
                work.push(Propagate::KeyframeWanted {
                    room: peer.room.clone(),
                });
            }
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            // Not gone yet: a network change is survived by an ICE restart.
            peer.lost_since.get_or_insert_with(Instant::now);
        }
        Event::IceConnectionStateChange(
            IceConnectionState::Connected | IceConnectionState::Completed,
        ) => {
            // Back on a new path: a technician's decoder restarts on a keyframe.
            let was_lost = peer.lost_since.take().is_some();
            if was_lost && peer.role == PeerRole::Subscriber {
                work.push(Propagate::KeyframeWanted {
                    room: peer.room.clone(),
                });
            }
        }
        Event::MediaAdded(added) => peer.mids.push((added.mid, added.kind)),
        Event::MediaData(data) => {
            let Some(kind) = peer.kind_of(data.mid) else {
                return;
            };
            // Technicians send only their voice; audio nobody consented to goes nowhere.
            let allowed = match kind {
                MediaKind::Video => peer.role == PeerRole::Publisher,
                MediaKind::Audio => peer.sends_audio,
            };
            if !allowed {
                return;
            }
            if kind == MediaKind::Video {
                if !peer.video_seen {
                    peer.video_seen = true;
                    let _ = events.send(MediaEvent::VideoFlowing {
                        room: peer.room.to_string(),
                        peer: id,
                    });
                }
                if !peer.layers_seen.contains(&data.rid) && peer.layers_seen.len() < 8 {
                    // The customer's browser adds a layer once its own uplink estimate
                    // allows: a technician cannot get the full layer before it comes.
                    peer.layers_seen.push(data.rid);
                    tracing::info!(target: LAYER_LOG, peer = id.0, rid = ?data.rid, "a layer of the customer's video arrives");
                }
                if !data.contiguous {
                    work.push(Propagate::KeyframeWanted {
                        room: peer.room.clone(),
                    });
                }
            }
            work.push(Propagate::Forward {
                from: id,
                role: peer.role,
                room: peer.room.clone(),
                kind,
                data: Box::new(data),
            });
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
            if peer.role == PeerRole::Subscriber =>
        {
            let next = layers::choose(peer.target_layer, estimate.as_u64());
            // Under their own target, so that a test (or an operator chasing a
            // technician's blurry picture) can follow the estimate and the layer it chose.
            tracing::debug!(target: LAYER_LOG, peer = id.0, estimate_bps = estimate.as_u64(), "downlink estimate");
            if next == peer.target_layer {
                return;
            }
            tracing::info!(target: LAYER_LOG, peer = id.0, estimate_bps = estimate.as_u64(), from = ?peer.target_layer, to = ?next, "technician's video layer changes");
            if next.is_none() != peer.target_layer.is_none() {
                let _ = events.send(MediaEvent::VideoSuspended {
                    room: peer.room.to_string(),
                    peer: id,
                    suspended: next.is_none(),
                });
            }
            if next.is_none() {
                // When video resumes it starts again at a keyframe.
                peer.layer = None;
                peer.awaiting_keyframe = true;
            }
            peer.target_layer = next;
        }
        Event::KeyframeRequest(_) if peer.role == PeerRole::Subscriber => {
            work.push(Propagate::KeyframeWanted {
                room: peer.room.clone(),
            });
        }
        _ => {}
    }
}

/// The log target of the technicians' estimates and layer changes.
const LAYER_LOG: &str = "sightline::media::layers";

/// What to do with a video frame for one technician.
enum VideoDecision {
    /// Forward it, with this timestamp (and ask for a keyframe of a layer to switch to).
    Forward(MediaTime, Option<Option<Rid>>),
    Skip,
    /// Skip it and ask the customer's browser for a keyframe of this layer.
    NeedKeyframe(Option<Rid>),
}

/// Decides whether a technician gets a video frame: only their layer's (or, without
/// simulcast, every frame), starting and switching only at keyframes so their decoder
/// never sees a frame it cannot use.
fn forward_video(target: &mut Peer, data: &MediaData) -> VideoDecision {
    let Some(wanted) = target.target_layer else {
        return VideoDecision::Skip;
    };
    let layer = data.rid.and_then(layers::Layer::of);
    let keyframe = data.is_keyframe();
    match layer {
        // Not simulcast: one stream for everyone.
        None if data.rid.is_none() => {
            if target.awaiting_keyframe && !keyframe {
                return VideoDecision::NeedKeyframe(None);
            }
        }
        None => return VideoDecision::Skip,
        Some(layer) if target.layer == Some(layer) && !target.awaiting_keyframe => {
            if layer != wanted {
                // Keep this layer flowing until the wanted one can take over.
                return forward_with_time(target, data, Some(wanted.rid()));
            }
        }
        Some(layer) if layer == wanted => {
            if !keyframe {
                return VideoDecision::NeedKeyframe(Some(wanted.rid()));
            }
            // Switch: continue the timeline one frame after the last forwarded frame.
            let t = data.time.numer() as i64;
            target.time_shift = match target.last_video_time {
                Some(last) => last as i64 + 3_000 - t,
                None => 0,
            };
            target.layer = Some(layer);
        }
        Some(_) => return VideoDecision::Skip,
    }
    target.awaiting_keyframe = false;
    forward_with_time(target, data, None)
}

fn forward_with_time(
    target: &mut Peer,
    data: &MediaData,
    keyframe_for: Option<Rid>,
) -> VideoDecision {
    let time = (data.time.numer() as i64 + target.time_shift).max(0) as u64;
    target.last_video_time = Some(time);
    VideoDecision::Forward(
        MediaTime::new(time, data.time.frequency()),
        keyframe_for.map(Some),
    )
}

/// Asks the customer's browser for keyframes of these layers (`None`: without simulcast),
/// at most one per layer every [`KEYFRAME_REQUEST_INTERVAL`].
pub(super) fn request_keyframe(publisher: &mut Peer, rids: &[Option<Rid>], now: Instant) {
    let Some(mid) = publisher.mid_of(MediaKind::Video) else {
        return;
    };
    for (i, rid) in rids.iter().enumerate() {
        if rids[..i].contains(rid) {
            continue;
        }
        let recent = publisher
            .last_keyframe_requests
            .iter()
            .any(|(r, at)| r == rid && now < *at + KEYFRAME_REQUEST_INTERVAL);
        if recent {
            continue;
        }
        // Fails for a layer the browser does not send; that is fine.
        if let Some(mut writer) = publisher.rtc.writer(mid)
            && writer
                .request_keyframe(*rid, KeyframeRequestKind::Pli)
                .is_ok()
        {
            publisher.last_keyframe_requests.retain(|(r, _)| r != rid);
            publisher.last_keyframe_requests.push((*rid, now));
        }
    }
}
