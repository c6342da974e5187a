//! The media relay: one worker per core, each owning its peers' WebRTC state (str0m,
//! sans-IO) and forwarding the customer's media to every technician in the same room. A
//! room lives on one worker ([`placement`]). The workers share the media port as a
//! `SO_REUSEPORT` group; a datagram that reaches another worker's socket is handed over
//! ([`demux`]).
//!
//! The rest of the appliance talks to it only through [`MediaHandle`] (commands) and the
//! [`MediaEvent`] channel; nothing here knows about HTTP, sessions or the store. Each
//! worker runs on its own thread with a single-threaded runtime and alone owns its peers,
//! so no lock is taken on the packet path.

mod demux;
mod layers;
mod placement;
mod sockets;
pub mod tcp;
mod timers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::mpsc;

use demux::{Batch, Routes};
use placement::Placement;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the SDP offer is not valid: {0}")]
    InvalidOffer(String),
    #[error("the media relay is not running")]
    Stopped,
    #[error("no such media connection (it ended or was dropped)")]
    UnknownPeer,
}

/// Identifies one WebRTC peer connection in the relay.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PeerId(pub u64);

/// Stands for "no peer" where a datagram's routes named none.
const UNROUTED: PeerId = PeerId(u64::MAX);

/// The low bits of a [`PeerId`] say which worker owns the peer.
const WORKER_BITS: u32 = 8;
/// Workers at most (the low bits must hold the index).
const MAX_WORKERS: usize = 64;

impl PeerId {
    fn new(sequence: u64, worker: usize) -> Self {
        Self((sequence << WORKER_BITS) | worker as u64)
    }

    fn worker(self) -> usize {
        (self.0 & ((1 << WORKER_BITS) - 1)) as usize
    }
}

/// What a peer does in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Sends media into the room (the customer's camera).
    Publisher,
    /// Receives the publisher's media (a technician).
    Subscriber,
}

/// What the relay tells the rest of the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS completed for this peer.
    Connected {
        room: String,
        peer: PeerId,
        role: PeerRole,
        /// Where the peer's media comes from.
        source: Option<SocketAddr>,
    },
    /// The first video frame from the room's publisher reached the relay.
    VideoFlowing { room: String, peer: PeerId },
    /// A source sent more malformed or unsolicited datagrams than allowed in a minute.
    MalformedFlood { source: std::net::IpAddr },
    /// A technician's downlink became too thin for video (audio goes on), or video
    /// resumed.
    VideoSuspended {
        room: String,
        peer: PeerId,
        suspended: bool,
    },
    /// The peer is gone (left, timed out or failed).
    Disconnected {
        room: String,
        peer: PeerId,
        role: PeerRole,
    },
}

/// Where a room's recording goes. Called from the relay loop, so neither call may block:
/// implementations hand the bytes to a thread of their own.
pub trait RecordingSink: Send {
    /// A finished WebM cluster.
    fn cluster(&mut self, bytes: Vec<u8>);
    /// The recording ended; `last` is the final cluster, if any.
    fn finish(self: Box<Self>, last: Option<Vec<u8>>, summary: crate::webm::Summary);
}

enum Command {
    Add(Box<NewPeer>),
    /// Starts (`Some`) or stops (`None`) recording a room.
    Record(String, Option<Box<dyn RecordingSink>>),
    /// A new offer from an existing peer (an ICE restart after a network change).
    Renegotiate(
        PeerId,
        Box<SdpOffer>,
        tokio::sync::oneshot::Sender<Result<String, MediaError>>,
    ),
    Remove(PeerId),
    CloseRoom(String),
    /// A peer's ufrag (from its answer, or a new one after an ICE restart): told to every
    /// worker, since the peer's checks may reach any socket of the group.
    Route(Box<str>, PeerId),
    /// The peer is gone: nothing routes to it any more.
    Forget(PeerId),
    /// A connection to the HTTPS port that speaks ICE-TCP, and where it came from (to
    /// worker 0, which owns those connections).
    Tcp(std::net::TcpStream, SocketAddr),
    /// A frame for an ICE-TCP connection (to worker 0).
    TcpSend(SocketAddr, Vec<u8>),
    /// Blocks the loop for a while: lets tests prove that a stalled relay stops the
    /// systemd watchdog from being fed.
    Stall(Duration),
    Shutdown,
}

/// Counters the relay keeps for metrics; relaxed atomics, written by its threads.
#[derive(Debug, Default)]
pub struct MediaStats {
    pub peers: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    /// Datagrams (and ICE-TCP frames) the relay sent: media, RTCP, ICE and DTLS.
    pub datagrams_sent: AtomicU64,
    /// Datagrams that reached another worker's socket than their peer's and were handed
    /// over (the kernel spreads remote addresses over the group's sockets by a hash).
    pub datagrams_handed_over: AtomicU64,
    /// ICE-TCP connections open now.
    pub tcp_connections: AtomicU64,
    /// Connections to the HTTPS port closed because they were neither TLS nor ICE-TCP,
    /// or sent nothing in time.
    pub tcp_rejected: AtomicU64,
    /// Per worker: milliseconds since `started` at its last turn (the watchdog's
    /// heartbeat).
    heartbeats: Box<[AtomicU64]>,
    started: std::sync::OnceLock<Instant>,
}

impl MediaStats {
    fn new(loops: usize) -> Self {
        Self {
            heartbeats: (0..loops).map(|_| AtomicU64::new(0)).collect(),
            ..Self::default()
        }
    }

    fn beat(&self, slot: usize) {
        let started = self.started.get_or_init(Instant::now);
        if let Some(heartbeat) = self.heartbeats.get(slot) {
            heartbeat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// How long ago the relay's least recently turning loop last ran.
    pub fn heartbeat_age(&self) -> Duration {
        let started = self.started.get_or_init(Instant::now);
        let now = started.elapsed().as_millis() as u64;
        let oldest = self
            .heartbeats
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .min()
            .unwrap_or(now);
        Duration::from_millis(now.saturating_sub(oldest))
    }
}

struct NewPeer {
    id: PeerId,
    room: String,
    role: PeerRole,
    sends_audio: bool,
    rtc: Rtc,
    local: SocketAddr,
    local_tcp: Option<SocketAddr>,
}

/// The rest of the appliance's handle on the relay.
#[derive(Clone)]
pub struct MediaHandle {
    /// One command queue per worker.
    workers: Arc<[mpsc::UnboundedSender<Command>]>,
    placement: Arc<Mutex<Placement>>,
    local_addr: SocketAddr,
    /// The HTTPS port, announced as a passive TCP candidate (ICE-TCP).
    tcp_port: Option<u16>,
    next_peer: Arc<AtomicU64>,
    stats: Arc<MediaStats>,
}

impl MediaHandle {
    /// A handle to no relay, for offline tools that manage stored sessions; negotiating
    /// through it fails with [`MediaError::Stopped`].
    pub fn detached() -> Self {
        Self {
            workers: Arc::new([]),
            placement: Arc::new(Mutex::new(Placement::new(0))),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp_port: None,
            next_peer: Arc::new(AtomicU64::new(1)),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    /// Blocks the relay's workers for `duration` (diagnostics and watchdog tests).
    pub fn stall(&self, duration: Duration) {
        for worker in self.workers.iter() {
            let _ = worker.send(Command::Stall(duration));
        }
    }

    /// The worker owning `peer`, if there is such a worker.
    fn worker_of(&self, peer: PeerId) -> Option<&mpsc::UnboundedSender<Command>> {
        self.workers.get(peer.worker())
    }

    /// The worker a room's peers are on now, if any.
    fn worker_of_room(&self, room: &str) -> Option<&mpsc::UnboundedSender<Command>> {
        let placement = self.placement.lock().unwrap_or_else(|e| e.into_inner());
        self.workers.get(placement.worker_of(room)?)
    }

    /// The address the relay's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers a peer's SDP offer and hands the peer to the relay loop. `announce` is the
    /// host candidate given to the browser (the relay's reachable address). Audio from a
    /// peer is forwarded to the others only if `sends_audio` (the customer consented to
    /// the microphone; a technician is not a mere observer).
    pub fn negotiate(
        &self,
        room: &str,
        role: PeerRole,
        sends_audio: bool,
        offer: &str,
        announce: SocketAddr,
    ) -> Result<(PeerId, String), MediaError> {
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| MediaError::InvalidOffer(e.to_string()))?;
        let mut rtc = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            // The relay has a single, directly reachable address: the browser runs the
            // connectivity checks and the relay answers them.
            .set_ice_lite(true)
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false)
            // Technicians' downlinks are estimated to choose their simulcast layer.
            .enable_bwe((role == PeerRole::Subscriber).then(|| Bitrate::kbps(300)))
            .build(Instant::now());
        if role == PeerRole::Subscriber {
            // Probe up to what the full layer and audio need.
            rtc.bwe()
                .set_bitrate(Bitrate::kbps(100), Bitrate::kbps(1_600));
        }
        let candidate = Candidate::host(announce, "udp")
            .map_err(|e| MediaError::InvalidOffer(format!("bad relay address: {e}")))?;
        rtc.add_local_candidate(candidate);
        // The same host on the HTTPS port over TCP, for networks that let no UDP through;
        // its type preference ranks it below UDP, so it is used only when UDP fails.
        let local_tcp = self
            .tcp_port
            .map(|port| SocketAddr::new(announce.ip(), port));
        if let Some(addr) = local_tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(str0m::net::TcpType::Passive)
                .build()
                .map_err(|e| MediaError::InvalidOffer(format!("bad relay address: {e}")))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| MediaError::InvalidOffer(e.to_string()))?;
        if self.workers.is_empty() {
            return Err(MediaError::Stopped);
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let worker = self
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join(room);
        let id = PeerId::new(self.next_peer.fetch_add(1, Ordering::Relaxed), worker);
        // Routed before the worker has it: the browser sends nothing before the answer.
        tell_all(&self.workers, || Command::Route(ufrag.as_str().into(), id));
        let added = self.workers[worker].send(Command::Add(Box::new(NewPeer {
            id,
            room: room.to_owned(),
            role,
            sends_audio,
            rtc,
            local: announce,
            local_tcp,
        })));
        if added.is_err() {
            self.placement
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .leave(room);
            return Err(MediaError::Stopped);
        }
        Ok((id, answer.to_sdp_string()))
    }

    pub fn remove_peer(&self, peer: PeerId) {
        if let Some(worker) = self.worker_of(peer) {
            let _ = worker.send(Command::Remove(peer));
        }
    }

    /// Starts recording a room into `sink`; the recording begins at the next keyframe.
    pub fn start_recording(&self, room: &str, sink: Box<dyn RecordingSink>) {
        match self.worker_of_room(room) {
            Some(worker) => {
                let _ = worker.send(Command::Record(room.to_owned(), Some(sink)));
            }
            // Nobody is in the room: an empty recording ends at once.
            None => sink.finish(None, crate::webm::Summary::default()),
        }
    }

    pub fn stop_recording(&self, room: &str) {
        if let Some(worker) = self.worker_of_room(room) {
            let _ = worker.send(Command::Record(room.to_owned(), None));
        }
    }

    /// Answers a new offer of an existing peer, such as an ICE restart after the
    /// participant's network changed; the peer keeps its identity and its room.
    pub async fn renegotiate(&self, peer: PeerId, offer: &str) -> Result<String, MediaError> {
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| MediaError::InvalidOffer(e.to_string()))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.worker_of(peer)
            .ok_or(MediaError::UnknownPeer)?
            .send(Command::Renegotiate(peer, Box::new(offer), reply))
            .map_err(|_| MediaError::Stopped)?;
        answer.await.map_err(|_| MediaError::Stopped)?
    }

    /// Hands over a connection to the HTTPS port that opened with ICE-TCP.
    pub fn accept_tcp(&self, stream: std::net::TcpStream, remote: SocketAddr) {
        if let Some(first) = self.workers.first() {
            let _ = first.send(Command::Tcp(stream, remote));
        }
    }

    /// Counts a connection to the HTTPS port that was closed unrecognised.
    pub fn tcp_rejected(&self) {
        self.stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn close_room(&self, room: &str) {
        if let Some(worker) = self.worker_of_room(room) {
            let _ = worker.send(Command::CloseRoom(room.to_owned()));
        }
    }

    pub fn shutdown(&self) {
        for worker in self.workers.iter() {
            let _ = worker.send(Command::Shutdown);
        }
    }
}

/// Binds the media port for `workers` workers (0: one per core): one socket each, as one
/// `SO_REUSEPORT` group. Fails when anything holds the port already.
pub fn bind(address: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let count = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(MAX_WORKERS);
    sockets::bind_group(address, count)
}

/// Starts one worker per socket of [`bind`]'s group, each on its own thread. The thread
/// returned (worker 0's) ends after all the others, once [`MediaHandle::shutdown`] was
/// called.
pub fn start(
    sockets: Vec<std::net::UdpSocket>,
    tcp_port: Option<u16>,
    malformed_per_minute: u32,
    reconnect_grace: Duration,
) -> std::io::Result<(
    MediaHandle,
    mpsc::UnboundedReceiver<MediaEvent>,
    std::thread::JoinHandle<()>,
)> {
    let count = sockets.len();
    if count > MAX_WORKERS {
        return Err(std::io::Error::other(
            "more media sockets than workers can be",
        ));
    }
    let local_addr = sockets
        .first()
        .ok_or_else(|| std::io::Error::other("no media socket"))?
        .local_addr()?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(MediaStats::new(count));
    let placement = Arc::new(Mutex::new(Placement::new(count)));
    let junk = Arc::new(Mutex::new(JunkCounter::new(malformed_per_minute)));
    // Each worker's queues: commands, datagrams handed over to it, and batches coming back
    // to it; every worker gets all the senders, each its own receivers.
    let (mut commands, mut handover, mut recycle, mut receivers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..count {
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (handover_tx, handover_rx) = mpsc::channel(demux::HANDOVER_QUEUE);
        let (recycle_tx, recycled_rx) = std::sync::mpsc::channel();
        commands.push(commands_tx);
        handover.push(handover_tx);
        recycle.push(recycle_tx);
        receivers.push((commands_rx, handover_rx, recycled_rx));
    }
    let commands: Arc<[mpsc::UnboundedSender<Command>]> = commands.into();
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let workers: Vec<_> = sockets.into_iter().zip(receivers).enumerate().collect();
    // Worker 0 starts last, so that its thread can wait for the others at the end.
    let mut worker_zero = None;
    for (index, (socket, (commands_rx, handover_rx, recycled))) in workers.into_iter().rev() {
        // Room for bursts (a keyframe to several technicians); the kernel caps this at
        // net.core.[rw]mem_max. Without it the benchmark's raw loop lost 7–14 % to bursts.
        sockets::enlarge_buffers(&socket);
        socket.set_nonblocking(true)?;
        let sender = socket.try_clone()?;
        let worker = Relay {
            index,
            socket: sender,
            socket_addr: local_addr,
            peers: HashMap::new(),
            rooms: HashMap::new(),
            events: events_tx.clone(),
            stats: stats.clone(),
            junk: junk.clone(),
            reconnect_grace,
            routes: Routes::default(),
            workers: commands.clone(),
            handover: handover.clone(),
            pending: (0..count).map(|_| Batch::new(index)).collect(),
            recycle: recycle.clone(),
            recycled,
            tcp: HashMap::new(),
            next_sweep: Instant::now(),
            placement: placement.clone(),
            timers: timers::Timers::default(),
            queued: Vec::new(),
            polling: Vec::new(),
            work: Vec::new(),
            dead: Vec::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let others = if index == 0 {
            std::mem::take(&mut threads)
        } else {
            Vec::new()
        };
        let thread: std::thread::JoinHandle<()> = std::thread::Builder::new()
            .name(format!("media-worker-{index}"))
            .spawn(move || {
                runtime.block_on(worker.run(socket, commands_rx, handover_rx));
                for other in others {
                    let _ = other.join();
                }
            })?;
        if index == 0 {
            worker_zero = Some(thread);
        } else {
            threads.push(thread);
        }
    }
    let thread = worker_zero.ok_or_else(|| std::io::Error::other("no media worker"))?;
    let handle = MediaHandle {
        workers: commands,
        placement,
        local_addr,
        tcp_port,
        next_peer: Arc::new(AtomicU64::new(1)),
        stats,
    };
    Ok((handle, events_rx, thread))
}

struct Peer {
    room: Arc<str>,
    role: PeerRole,
    sends_audio: bool,
    rtc: Rtc,
    /// The address announced in this peer's host candidate; datagrams from this peer are
    /// handed to str0m as arriving there even when the socket is bound to a wildcard.
    local: SocketAddr,
    /// The same for the passive TCP candidate on the HTTPS port.
    local_tcp: Option<SocketAddr>,
    deadline: Instant,
    /// Its entry in the worker's timers (entries with another time are stale), and
    /// whether it is queued to be polled in this turn.
    scheduled: Option<Instant>,
    queued: bool,
    mids: Vec<(Mid, MediaKind)>,
    /// A subscriber gets no video until a keyframe arrives, so its decoder never starts
    /// on a delta frame.
    awaiting_keyframe: bool,
    video_seen: bool,
    /// When a keyframe was last asked for, per simulcast layer (`None`: no simulcast).
    last_keyframe_requests: Vec<(Option<Rid>, Instant)>,
    /// The address the peer's traffic last came from.
    remote: Option<SocketAddr>,
    /// Every address its traffic came from (a few: ICE tries each candidate pair), so
    /// that what still arrives from them after it left is known as late, not as junk.
    sources: Vec<SocketAddr>,
    /// When ICE lost the peer; it has the grace period to come back (ICE restart).
    lost_since: Option<Instant>,
    /// Simulcast, for technicians: the layer forwarded now, and the one their downlink
    /// allows (`None`: no video fits). A switch waits for the new layer's keyframe.
    layer: Option<layers::Layer>,
    target_layer: Option<layers::Layer>,
    /// Added to forwarded video timestamps so that layer switches look continuous (the
    /// layers' RTP clocks have unrelated offsets).
    time_shift: i64,
    last_video_time: Option<u64>,
}

impl Peer {
    fn mid_of(&self, kind: MediaKind) -> Option<Mid> {
        self.mids.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m)
    }

    fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.mids.iter().find(|(m, _)| *m == mid).map(|(_, k)| *k)
    }
}

#[derive(Default)]
struct Room {
    publisher: Option<PeerId>,
    subscribers: Vec<PeerId>,
    recording: Option<Recording>,
}

struct Recording {
    muxer: crate::webm::Muxer,
    sink: Box<dyn RecordingSink>,
    /// The technician whose voice is recorded: the first to speak. A WebM track carries
    /// one encoder's stream, so other technicians' audio is not recorded.
    technician: Option<PeerId>,
    /// With simulcast: the layer recorded now, and when the full layer was last seen (the
    /// browser sends it only once its uplink allows). The best layer flowing is recorded,
    /// switching at keyframes.
    layer: Option<layers::Layer>,
    high_seen: Option<Instant>,
}

impl Recording {
    fn new(sink: Box<dyn RecordingSink>) -> Self {
        Self {
            muxer: crate::webm::Muxer::new(),
            sink,
            technician: None,
            layer: None,
            high_seen: None,
        }
    }

    /// Adds a frame; returns the layer (`Some(None)`: no simulcast) of which a keyframe
    /// is wanted, while the recording waits for one to start or to switch layers.
    fn push(
        &mut self,
        from: PeerId,
        role: PeerRole,
        kind: MediaKind,
        data: &MediaData,
        now: Instant,
    ) -> Option<Option<Rid>> {
        use crate::webm::{CUSTOMER_AUDIO_TRACK, TECHNICIAN_AUDIO_TRACK, VIDEO_TRACK};
        let mut wanted_keyframe = None;
        if role == PeerRole::Publisher && kind == MediaKind::Video {
            match data.rid {
                None if !self.muxer.started() => wanted_keyframe = Some(None),
                None => {}
                Some(rid) => {
                    let layer = layers::Layer::of(rid)?;
                    if layer == layers::Layer::High {
                        self.high_seen = Some(now);
                    }
                    let high_flows = self
                        .high_seen
                        .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1));
                    let best = if high_flows {
                        layers::Layer::High
                    } else {
                        layers::Layer::Low
                    };
                    if self.layer != Some(best) {
                        if layer == best && data.is_keyframe() {
                            self.layer = Some(best);
                        } else {
                            wanted_keyframe = Some(Some(best.rid()));
                        }
                    }
                    if self.layer != Some(layer) {
                        return wanted_keyframe;
                    }
                }
            }
        }
        let track = match (role, kind) {
            (PeerRole::Publisher, MediaKind::Video) => VIDEO_TRACK,
            (PeerRole::Publisher, MediaKind::Audio) => CUSTOMER_AUDIO_TRACK,
            (PeerRole::Subscriber, MediaKind::Audio)
                if *self.technician.get_or_insert(from) == from =>
            {
                TECHNICIAN_AUDIO_TRACK
            }
            _ => return wanted_keyframe,
        };
        let keyframe = kind == MediaKind::Audio || data.is_keyframe();
        if let Some(cluster) = self.muxer.push(track, now, keyframe, &data.data) {
            self.sink.cluster(cluster);
        }
        wanted_keyframe
    }

    fn finish(self) {
        let (last, summary) = self.muxer.finish();
        self.sink.finish(last, summary);
    }
}

/// Work produced while polling one peer that touches other peers.
enum Propagate {
    Forward {
        from: PeerId,
        role: PeerRole,
        room: Arc<str>,
        kind: MediaKind,
        data: Box<MediaData>,
    },
    KeyframeWanted {
        room: Arc<str>,
    },
}

const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// The loop turns at least this often, which is also its watchdog heartbeat.
const IDLE_WAKEUP: Duration = Duration::from_millis(100);
/// Every peer is visited at least this often, whatever its own deadline.
const PEER_VISIT: Duration = Duration::from_secs(1);

/// One worker: owns its peers and rooms, reads its socket of the group and sends on it.
struct Relay {
    index: usize,
    /// Sends one datagram per call: batching a turn's datagrams into one sendmmsg at its
    /// end made the e2e simulcast test's ramp to the full layer fail 2 runs in 4 (5 of 5
    /// passed without), so the pacer's spacing is left alone.
    socket: std::net::UdpSocket,
    socket_addr: SocketAddr,
    peers: HashMap<PeerId, Peer>,
    rooms: HashMap<Arc<str>, Room>,
    events: mpsc::UnboundedSender<MediaEvent>,
    stats: Arc<MediaStats>,
    /// Shared by the workers (a source's ports hash to different sockets); taken only for
    /// datagrams that belong to nobody.
    junk: Arc<Mutex<JunkCounter>>,
    reconnect_grace: Duration,
    routes: Routes,
    /// Every worker's commands (this one's too).
    workers: Arc<[mpsc::UnboundedSender<Command>]>,
    /// Every worker's queue of handed-over datagrams, and the batch being filled for each.
    handover: Vec<mpsc::Sender<Batch>>,
    pending: Vec<Batch>,
    /// Where read batches go back to (by origin), and where this worker's come back.
    recycle: Vec<std::sync::mpsc::Sender<Batch>>,
    recycled: std::sync::mpsc::Receiver<Batch>,
    /// ICE-TCP connections by their remote address (worker 0 only), and when unbound
    /// ones are next closed.
    tcp: HashMap<SocketAddr, tcp::TcpConn>,
    next_sweep: Instant,
    placement: Arc<Mutex<Placement>>,
    /// When each peer next needs a visit, and the peers to poll in this turn (they got
    /// input, were written to, or are due): a turn touches only those, not every peer.
    timers: timers::Timers<PeerId>,
    queued: Vec<PeerId>,
    /// Kept between turns for their capacity.
    polling: Vec<PeerId>,
    work: Vec<Propagate>,
    dead: Vec<PeerId>,
}

/// Source addresses a peer used, at most (ICE candidate pairs of one browser).
const MAX_PEER_SOURCES: usize = 8;
/// How long datagrams from a departed peer's addresses are late traffic, not junk: a
/// browser keeps sending media and consent checks for a while after its peer is gone
/// (the page learns of the end over signaling, and ICE consent lasts 30 s).
const DEPARTED_GRACE: Duration = Duration::from_secs(60);

/// Counts malformed or unsolicited datagrams per source within a minute.
struct JunkCounter {
    limit: u32,
    window_start: Instant,
    counts: HashMap<std::net::IpAddr, u32>,
    /// Addresses of peers that left, and when: their late datagrams are dropped without
    /// counting, or every ordinary session end from one address (a NAT) would add up to
    /// an alarm.
    departed: HashMap<SocketAddr, Instant>,
}

impl JunkCounter {
    fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            window_start: Instant::now(),
            counts: HashMap::new(),
            departed: HashMap::new(),
        }
    }

    /// Notes the addresses a peer that left used.
    fn departed(&mut self, sources: &[SocketAddr], now: Instant) {
        if self.departed.len() + sources.len() > 65_536 {
            self.departed
                .retain(|_, at| now.duration_since(*at) < DEPARTED_GRACE);
        }
        for source in sources {
            self.departed.insert(*source, now);
        }
    }

    /// Counts one datagram; true exactly when the source reaches the limit.
    fn count(&mut self, source: SocketAddr, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= Duration::from_secs(60) {
            self.window_start = now;
            self.counts.clear();
            self.departed
                .retain(|_, at| now.duration_since(*at) < DEPARTED_GRACE);
        }
        if self
            .departed
            .get(&source)
            .is_some_and(|at| now.duration_since(*at) < DEPARTED_GRACE)
        {
            return false;
        }
        let source = source.ip().to_canonical();
        // Bounded memory under a spoofed-source flood: the window restarts when full.
        if self.counts.len() >= 65_536 && !self.counts.contains_key(&source) {
            self.counts.clear();
        }
        let count = self.counts.entry(source).or_insert(0);
        *count += 1;
        *count == self.limit
    }
}

impl Relay {
    fn junk(&mut self, source: SocketAddr) {
        self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        let flagged = self
            .junk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count(source, Instant::now());
        if flagged {
            let ip = source.ip().to_canonical();
            let _ = self.events.send(MediaEvent::MalformedFlood { source: ip });
        }
    }

    async fn run(
        mut self,
        socket: std::net::UdpSocket,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut handed_over: mpsc::Receiver<Batch>,
    ) {
        let reader = match tokio::net::UdpSocket::from_std(socket) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::error!(error = %e, "media socket unusable");
                return;
            }
        };
        // Built here, on the worker's thread: its system-call headers hold raw pointers.
        // Larger than any datagram a browser sends (its MTU is 1500; ours is 1200).
        let mut datagram = vec![0u8; 2048];
        // ICE-TCP connections' tasks run on this runtime and send their frames in.
        let (tcp_tx, mut tcp_rx) = mpsc::channel(4096);
        loop {
            self.stats.beat(self.index);
            let deadline = self.drive(Instant::now());
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Add(peer)) => self.add(*peer),
                    Some(Command::Record(room, sink)) => self.record(&room, sink),
                    Some(Command::Renegotiate(id, offer, reply)) => {
                        let _ = reply.send(self.renegotiate(id, *offer));
                    }
                    Some(Command::Remove(id)) => self.disconnect(id),
                    Some(Command::CloseRoom(room)) => {
                        let ids: Vec<PeerId> = self
                            .peers
                            .iter()
                            .filter(|(_, p)| &*p.room == room.as_str())
                            .map(|(id, _)| *id)
                            .collect();
                        for id in ids {
                            self.disconnect(id);
                        }
                    }
                    Some(Command::Route(ufrag, peer)) => self.routes.add(&ufrag, peer),
                    Some(Command::Forget(peer)) => self.routes.forget(peer),
                    Some(Command::Tcp(stream, remote)) => self.open_tcp(stream, remote, &tcp_tx),
                    Some(Command::TcpSend(remote, frame)) => {
                        if let Some(conn) = self.tcp.get(&remote) {
                            conn.send(&frame);
                        }
                    }
                    Some(Command::Stall(duration)) => std::thread::sleep(duration),
                    Some(Command::Shutdown) | None => break,
                },
                Some(event) = tcp_rx.recv() => match event {
                    tcp::TcpEvent::Frame { remote, bytes } => {
                        self.arrive(Protocol::Tcp, &bytes, remote);
                    }
                    tcp::TcpEvent::Closed { remote } => {
                        self.tcp.remove(&remote);
                    }
                },
                Some(mut batch) = handed_over.recv() => {
                    for (proto, source, routed, bytes) in batch.iter() {
                        self.receive(proto, source, routed, bytes);
                    }
                    batch.clear();
                    if let Some(home) = self.recycle.get(batch.origin) {
                        let _ = home.send(batch);
                    }
                },
                ready = reader.readable() => {
                    if let Err(e) = ready {
                        tracing::debug!(error = %e, "media socket unusable");
                        continue;
                    }
                    // One datagram per turn, then the peers are driven: reading a batch
                    // before driving (recvmmsg, up to 32) made the e2e simulcast test miss
                    // the full layer in 2 runs of 5 after the ICE-TCP test; one at a time,
                    // 5 of 5 passed, as with the single loop before.
                    match reader.try_recv_from(&mut datagram) {
                        Ok((n, source)) => self.arrive(Protocol::Udp, &datagram[..n], source),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => tracing::debug!(error = %e, "media socket receive failed"),
                    }
                },
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.hand_over();
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.disconnect(id);
        }
        self.drive(Instant::now());
    }

    /// A datagram read from this worker's socket (or an ICE-TCP frame): processed here
    /// when its peer is this worker's, queued for its worker otherwise.
    fn arrive(&mut self, proto: Protocol, bytes: &[u8], source: SocketAddr) {
        let Some(peer) = self.routes.route(bytes, source) else {
            // Not routable: perhaps one of this worker's peers takes it anyway (str0m
            // accepts traffic on any path it has a viable candidate pair for).
            self.receive(proto, source, UNROUTED, bytes);
            return;
        };
        if proto == Protocol::Tcp
            && let Some(conn) = self.tcp.get_mut(&source)
        {
            conn.bound = true;
        }
        if peer.worker() == self.index {
            self.receive(proto, source, peer, bytes);
        } else if let Some(batch) = self.pending.get_mut(peer.worker()) {
            batch.push(proto, source, peer, bytes);
        } else {
            self.junk(source);
        }
    }

    /// Hands the other workers what arrived here for them.
    fn hand_over(&mut self) {
        for (worker, queue) in self.handover.iter().enumerate() {
            if self.pending[worker].len() == 0 {
                continue;
            }
            let spare = self
                .recycled
                .try_recv()
                .unwrap_or_else(|_| Batch::new(self.index));
            let batch = std::mem::replace(&mut self.pending[worker], spare);
            let count = batch.len() as u64;
            if let Err(e) = queue.try_send(batch) {
                // That worker is overloaded (or stopping): drop, as a full socket would.
                let (mpsc::error::TrySendError::Full(mut batch)
                | mpsc::error::TrySendError::Closed(mut batch)) = e;
                self.stats
                    .datagrams_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                self.pending[worker] = batch;
            } else {
                self.stats
                    .datagrams_handed_over
                    .fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    fn open_tcp(
        &mut self,
        stream: std::net::TcpStream,
        remote: SocketAddr,
        events: &mpsc::Sender<tcp::TcpEvent>,
    ) {
        if self.tcp.len() >= tcp::MAX_CONNECTIONS {
            self.stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match tcp::TcpConn::open(stream, remote, events.clone()) {
            // A second connection from the same address replaces the first.
            Ok(conn) => drop(self.tcp.insert(remote, conn)),
            Err(e) => tracing::debug!(error = %e, %remote, "ICE-TCP connection unusable"),
        }
    }

    fn renegotiate(&mut self, id: PeerId, offer: SdpOffer) -> Result<String, MediaError> {
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

    fn record(&mut self, room: &str, sink: Option<Box<dyn RecordingSink>>) {
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

    fn add(&mut self, new: NewPeer) {
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

    fn disconnect(&mut self, id: PeerId) {
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

    /// Hands one datagram to its peer: the one the routes point to, or
    /// (when that one does not take it, e.g. on a path it has not confirmed yet) whichever
    /// of this worker's peers does.
    fn receive(&mut self, proto: Protocol, source: SocketAddr, routed: PeerId, bytes: &[u8]) {
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
    fn drive(&mut self, now: Instant) -> Instant {
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
                // because it was written to, as str0m packetises on a timeout).
                if peer.deadline <= now
                    && peer.rtc.is_alive()
                    && let Err(e) = peer.rtc.handle_input(Input::Timeout(now))
                {
                    tracing::debug!(error = %e, peer = id.0, "peer failed on timeout");
                    peer.rtc.disconnect();
                }
                poll_peer(id, peer, out, &self.events, &self.stats, &mut work);
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

    /// Drops peers whose connection ended and tells the appliance.
    fn reap(&mut self) {
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

/// Sends a command to every worker (the sender's own queue included, so that each applies
/// routes the same way, in its next turn).
fn tell_all(workers: &[mpsc::UnboundedSender<Command>], command: impl Fn() -> Command) {
    for worker in workers {
        let _ = worker.send(command());
    }
}

/// Marks a peer to be polled in this turn of the loop.
fn queue(queued: &mut Vec<PeerId>, id: PeerId, peer: &mut Peer) {
    if !peer.queued {
        peer.queued = true;
        queued.push(id);
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
            if next == peer.target_layer {
                return;
            }
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
fn request_keyframe(publisher: &mut Peer, rids: &[Option<Rid>], now: Instant) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A str0m peer standing in for a browser, on its own loopback socket.
    struct Client {
        rtc: Rtc,
        socket: std::net::UdpSocket,
        local: SocketAddr,
        mid: Mid,
        connected: bool,
        received: usize,
    }

    impl Client {
        fn offer(
            direction: str0m::media::Direction,
        ) -> (Self, str0m::change::SdpPendingOffer, String) {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket.set_nonblocking(true).expect("nonblocking");
            let local = socket.local_addr().expect("addr");
            let mut rtc = Rtc::builder()
                .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
                .build(Instant::now());
            rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
            let mut api = rtc.sdp_api();
            let mid = api.add_media(MediaKind::Audio, direction, None, None, None);
            let (offer, pending) = api.apply().expect("offer");
            let client = Self {
                rtc,
                socket,
                local,
                mid,
                connected: false,
                received: 0,
            };
            (client, pending, offer.to_sdp_string())
        }

        /// A peer negotiated with the relay (in `room`, as `role`), not yet connected.
        fn join(
            handle: &MediaHandle,
            room: &str,
            role: PeerRole,
            direction: str0m::media::Direction,
        ) -> (Self, PeerId) {
            let (mut client, pending, offer) = Self::offer(direction);
            let (id, answer) = handle
                .negotiate(room, role, true, &offer, handle.local_addr())
                .expect("negotiated");
            let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).expect("answer");
            client
                .rtc
                .sdp_api()
                .accept_answer(pending, answer)
                .expect("accepted");
            (client, id)
        }

        /// Feeds what arrived, sends what str0m wants sent, notes events.
        fn turn(&mut self, now: Instant) {
            let mut buf = [0u8; 2048];
            while let Ok((n, source)) = self.socket.recv_from(&mut buf) {
                if let Ok(contents) = buf[..n].try_into() {
                    let receive = Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    };
                    let _ = self.rtc.handle_input(Input::Receive(now, receive));
                }
            }
            let _ = self.rtc.handle_input(Input::Timeout(now));
            while let Ok(output) = self.rtc.poll_output() {
                match output {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => drop(self.socket.send_to(&t.contents, t.destination)),
                    Output::Event(Event::Connected) => self.connected = true,
                    // Only frames as the tests' publishers send them count.
                    Output::Event(Event::MediaData(data))
                        if !data.data.is_empty() && data.data.iter().all(|b| *b == 0x55) =>
                    {
                        self.received += 1
                    }
                    Output::Event(_) => {}
                }
            }
        }
    }

    #[test]
    fn media_reaches_technicians_whichever_socket_of_the_group_it_arrives_on() {
        use str0m::media::Direction;
        // Eight workers: a peer's source address hashes to its room's worker's socket only
        // one time in eight, so with seven peers some datagrams are all but certainly
        // handed over (all seven landing home: (1/8)^7). Room "c" has two technicians:
        // each must get every frame whole (the last one is given the frame, not a copy).
        let sockets = bind("127.0.0.1:0".parse().expect("addr"), 8).expect("bind");
        assert_eq!(sockets.len(), 8);
        let (handle, _events, thread) =
            start(sockets, None, 1000, Duration::from_secs(5)).expect("start");
        let mut rooms = Vec::new();
        for (room, technicians) in [("a", 1), ("b", 1), ("c", 2)] {
            let mut peers =
                vec![Client::join(&handle, room, PeerRole::Publisher, Direction::SendOnly).0];
            for _ in 0..technicians {
                let role = PeerRole::Subscriber;
                peers.push(Client::join(&handle, room, role, Direction::RecvOnly).0);
            }
            rooms.push(peers);
        }
        let technicians_short =
            |rooms: &[Vec<Client>]| rooms.iter().flat_map(|r| &r[1..]).any(|t| t.received < 50);
        let started = Instant::now();
        let mut sequence = 0u64;
        while started.elapsed() < Duration::from_secs(20) && technicians_short(&rooms) {
            let now = Instant::now();
            for peers in &mut rooms {
                let publisher = &mut peers[0];
                let pt = publisher
                    .rtc
                    .writer(publisher.mid)
                    .and_then(|w| w.payload_params().next().map(|p| p.pt()));
                if publisher.connected
                    && let Some(pt) = pt
                    && let Some(writer) = publisher.rtc.writer(publisher.mid)
                {
                    let time =
                        MediaTime::new(sequence * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                    let _ = writer.write(pt, now, time, vec![0x55; 120]);
                }
                for client in peers.iter_mut() {
                    client.turn(now);
                }
            }
            sequence += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        for technician in rooms.iter().flat_map(|r| &r[1..]) {
            assert!(
                technician.received >= 50,
                "a technician got {} whole frames",
                technician.received
            );
        }
        assert!(
            handle.stats().datagrams_handed_over.load(Ordering::Relaxed) > 0,
            "no datagram crossed between workers"
        );
        handle.shutdown();
        thread.join().expect("relay threads end");
    }

    /// A peer that falls silent gets no datagram that would make its worker look at it:
    /// only its timers do. ICE notices the silence (ice-lite: 15 s without a check), the
    /// grace period runs out, and the peer is dropped all the same.
    #[test]
    fn a_peer_gone_silent_is_dropped_after_the_grace_period_without_any_traffic() {
        use str0m::media::Direction;
        let sockets = bind("127.0.0.1:0".parse().expect("addr"), 1).expect("bind");
        let (handle, mut events, thread) =
            start(sockets, None, 1000, Duration::from_millis(500)).expect("start");
        let (mut client, id) =
            Client::join(&handle, "room", PeerRole::Publisher, Direction::SendOnly);
        let started = Instant::now();
        while !client.connected && started.elapsed() < Duration::from_secs(10) {
            client.turn(Instant::now());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(client.connected, "the peer never connected");
        // From here on the client sends nothing, as if its network had gone.
        let mut dropped = false;
        while !dropped && started.elapsed() < Duration::from_secs(40) {
            match events.try_recv() {
                Ok(MediaEvent::Disconnected { peer, .. }) => dropped = peer == id,
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        assert!(dropped, "the silent peer was never dropped");
        assert_eq!(handle.stats().peers.load(Ordering::Relaxed), 0);
        handle.shutdown();
        thread.join().expect("relay threads end");
    }

    /// Customers behind one NAT, or a load test from one host: sessions end while their
    /// pages are still sending. What arrives after a peer left is late, not an attack.
    #[test]
    fn thirty_peers_from_one_address_leaving_while_they_send_raise_no_alarm() {
        use str0m::media::Direction;
        let sockets = bind("127.0.0.1:0".parse().expect("addr"), 1).expect("bind");
        let limit = crate::config::FirewallConfig::default().malformed_datagrams_per_minute;
        let (handle, mut events, thread) =
            start(sockets, None, limit, Duration::from_secs(5)).expect("start");
        let mut sequence = 0u64;
        for n in 0..30 {
            let room = format!("room-{n}");
            let (mut client, id) =
                Client::join(&handle, &room, PeerRole::Publisher, Direction::SendOnly);
            let started = Instant::now();
            while !client.connected && started.elapsed() < Duration::from_secs(10) {
                client.turn(Instant::now());
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(client.connected, "peer {n} never connected");
            handle.remove_peer(id);
            // The page has not heard of the end yet: 20 more packets, 20 ms apart.
            for _ in 0..20 {
                let now = Instant::now();
                let pt = client
                    .rtc
                    .writer(client.mid)
                    .and_then(|w| w.payload_params().next().map(|p| p.pt()));
                if let Some(pt) = pt
                    && let Some(writer) = client.rtc.writer(client.mid)
                {
                    let time =
                        MediaTime::new(sequence * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                    let _ = writer.write(pt, now, time, vec![0x55; 120]);
                }
                sequence += 1;
                client.turn(now);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let dropped = handle.stats().datagrams_dropped.load(Ordering::Relaxed);
        assert!(
            dropped > u64::from(limit),
            "the late datagrams did arrive ({dropped} dropped)"
        );
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(event, MediaEvent::MalformedFlood { .. }),
                "an alarm for ordinary session ends"
            );
        }
        handle.shutdown();
        thread.join().expect("relay threads end");
    }

    #[test]
    fn junk_is_flagged_once_per_source_and_window() {
        let start = Instant::now();
        let mut counter = JunkCounter {
            window_start: start,
            ..JunkCounter::new(3)
        };
        let a: SocketAddr = "198.18.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "198.18.0.2:5000".parse().expect("addr");
        assert!(!counter.count(a, start));
        assert!(!counter.count(a, start));
        assert!(!counter.count(b, start));
        assert!(counter.count(a, start), "third from a reaches the limit");
        assert!(!counter.count(a, start), "flagged once");
        let later = start + Duration::from_secs(61);
        assert!(!counter.count(a, later), "a new window starts over");
    }

    #[test]
    fn late_datagrams_of_a_departed_peer_are_not_junk_for_a_while() {
        let start = Instant::now();
        let mut counter = JunkCounter {
            window_start: start,
            ..JunkCounter::new(2)
        };
        let gone: SocketAddr = "198.18.0.1:5000".parse().expect("addr");
        let other_port: SocketAddr = "198.18.0.1:5001".parse().expect("addr");
        counter.departed(&[gone], start);
        for _ in 0..100 {
            assert!(!counter.count(gone, start));
        }
        assert!(!counter.count(other_port, start));
        assert!(
            counter.count(other_port, start),
            "a stranger on the same host counts"
        );
        let much_later = start + DEPARTED_GRACE + Duration::from_secs(1);
        assert!(!counter.count(gone, much_later));
        assert!(
            counter.count(gone, much_later),
            "after the grace it is junk again"
        );
    }
}
