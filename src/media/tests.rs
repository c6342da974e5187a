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
    fn offer(direction: str0m::media::Direction) -> (Self, str0m::change::SdpPendingOffer, String) {
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
                let time = MediaTime::new(sequence * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
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
    let (mut client, id) = Client::join(&handle, "room", PeerRole::Publisher, Direction::SendOnly);
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
                let time = MediaTime::new(sequence * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
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

#[test]
fn sent_datagrams_are_told_apart_by_their_clear_bytes() {
    // RTP (version 2) with payload type 96, with and without the padding bit.
    assert_eq!(Sent::of(&[0x80, 96, 0, 1]), Sent::Media);
    assert_eq!(
        Sent::of(&[0x90, 0xe0, 0, 1]),
        Sent::Media,
        "marker bit and extension"
    );
    assert_eq!(Sent::of(&[0xa0, 96, 0, 1]), Sent::Padding);
    // RTCP receiver report and transport feedback; STUN; DTLS; nothing.
    assert_eq!(Sent::of(&[0x81, 201, 0, 7]), Sent::Control);
    assert_eq!(Sent::of(&[0x8f, 205, 0, 4]), Sent::Control);
    assert_eq!(Sent::of(&[0x00, 0x01, 0, 0]), Sent::Control);
    assert_eq!(Sent::of(&[22, 254, 253]), Sent::Control);
    assert_eq!(Sent::of(&[]), Sent::Control);
}
