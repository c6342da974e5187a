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
mod forward;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handle;
mod layers;
mod peers;
mod placement;
mod recording;
mod sockets;
pub mod tcp;
mod timers;
mod worker;

pub use handle::{bind, start};

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
use recording::Recording;

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
    /// Of those, RTP packets carrying media (retransmissions included).
    pub media_packets_sent: AtomicU64,
    /// Of those, RTP packets of padding alone (bandwidth estimation's probes and fill).
    pub padding_packets_sent: AtomicU64,
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
    /// The simulcast layers (rids) this publisher's video came in so far.
    layers_seen: Vec<Option<Rid>>,
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
/// Timeouts answered for one peer in one poll, at most: a large keyframe (~63 kB) is about
/// 53 packets.
const MAX_PACER_DRAIN: usize = 64;
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

#[cfg(test)]
mod tests;

/// What a datagram the relay sends carries, told from the bytes SRTP leaves in the clear
/// (RFC 7983's first-byte ranges, RFC 5761's payload types for RTCP, the RTP padding bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Media,
    Padding,
    /// RTCP, STUN or DTLS.
    Control,
}

impl Sent {
    pub(crate) fn of(datagram: &[u8]) -> Self {
        match datagram {
            [first @ 128..=191, second, ..] if !(192..=223).contains(second) => {
                if first & 0x20 != 0 {
                    Sent::Padding
                } else {
                    Sent::Media
                }
            }
            _ => Sent::Control,
        }
    }
}
