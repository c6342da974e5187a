//! The handle the rest of the appliance holds, and the start of the workers.

use super::*;

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
