//! Relay benchmark (not a test): how much CPU the media relay spends per forwarded packet,
//! compared with a raw UDP forwarding loop measured in the same run, and where loss starts.
//!
//! `cargo build --release && cargo run --release --example relay_bench -- [options]`
//!   --levels 5,10,20,40   concurrent sessions per load step
//!   --seconds 10          measured window per step (after 8 s of warm-up)
//!   --soak 10000          join/leave cycles for the soak (0: none)
//!   --idle 0              sessions without video, measured before the load steps: what a
//!                         session waiting for its camera costs (the technician's console
//!                         opens its media connection once video flows), and what one
//!                         whose camera is paused costs (both media connections up)
//!   --mix heavy           the customer's video: `heavy`, one stream of 1.5 Mbit/s; or
//!                         `target`, the product's (simulcast: 320 px ≤ 150 kbit/s and the
//!                         full picture ≤ 900 kbit/s, 30 frames/s each)
//!   --cache-mib 32        the store's page cache (`[store] cache_mib`), to tell the cache
//!                         filling from memory that grows with the history
//!
//! The relay under test is the real `sightline` binary in its own process, so its CPU,
//! memory, threads and descriptors are read from /proc for that process alone. Sessions
//! are made through the real API; each has a customer (str0m, WHIP, like the browser)
//! publishing VP8-like video at 1.5 Mbit/s and 30 frames/s plus Opus-like audio at 50
//! packets/s, and a technician (WHEP) receiving both and publishing audio. The payloads
//! carry a stamp (stream, sequence, send time) about every 1000 bytes, i.e. one per
//! packet, from which loss and one-way latency are computed; the load generator shares
//! the two cores with the relay.
//!
//! The baseline is a raw UDP loop (recvmmsg/sendmmsg, no encryption) forwarding packets of
//! the same sizes, at the same rates and fan-out, on one thread of this process. The floor
//! is the same loop doing what any SRTP relay must per packet: AES-128-GCM open of what
//! arrives, a header rewrite and a seal per destination (aws-lc-rs, as str0m uses).

#[path = "../tests/integration/common.rs"]
mod common;

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};
use serde_json::json;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

const FPS: u64 = 30;

/// A layer of the customer's video: its simulcast rid (none without simulcast), its bytes
/// per frame, and whether its payload is stamped (the layer the technicians receive; the
/// other one the relay drops, as it would for a technician on the full layer).
struct VideoLayer {
    rid: Option<&'static str>,
    frame_bytes: usize,
    stamped: bool,
}

/// What the customer's video is (`--mix`), read from the arguments once: the generator
/// asks for every frame.
fn video_layers() -> &'static [VideoLayer] {
    const HEAVY: &[VideoLayer] = &[VideoLayer {
        rid: None,
        frame_bytes: 1_500_000 / 8 / FPS as usize,
        stamped: true,
    }];
    // The product's: the console's page caps its layers at 150 and 900 kbit/s.
    const TARGET: &[VideoLayer] = &[
        VideoLayer {
            rid: Some("l"),
            frame_bytes: 150_000 / 8 / FPS as usize,
            stamped: false,
        },
        VideoLayer {
            rid: Some("h"),
            frame_bytes: 900_000 / 8 / FPS as usize,
            stamped: true,
        },
    ];
    static CHOSEN: OnceLock<&'static [VideoLayer]> = OnceLock::new();
    CHOSEN.get_or_init(|| match arg::<String>("--mix").as_deref() {
        Some("target") => TARGET,
        _ => HEAVY,
    })
}
/// A stamp every CHUNK bytes: about one per RTP packet (str0m's payloads are ≤ 1200 B).
const CHUNK: usize = 1000;
/// Room for the VP8 frame header before the first stamp.
const VIDEO_HEADER: usize = 16;
const AUDIO_PER_SECOND: u64 = 50;
const AUDIO_BYTES: usize = 160;
const KEYFRAME_EVERY: u64 = 60;
const STAMP_MAGIC: u32 = 0x534c_4231;
const WARM_UP: Duration = Duration::from_secs(8);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn write_stamp(buf: &mut [u8], stream: u32, seq: u64, sent_ns: u64) {
    buf[0..4].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
    buf[4..8].copy_from_slice(&stream.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..24].copy_from_slice(&sent_ns.to_be_bytes());
}

fn read_stamp(buf: &[u8]) -> Option<u64> {
    let b = buf.get(0..24)?;
    (b[0..4] == STAMP_MAGIC.to_be_bytes())
        .then(|| u64::from_be_bytes(b[16..24].try_into().unwrap_or_default()))
}

/// What the senders sent and the receivers got, counted for stamps whose send time
/// falls in the measured window.
#[derive(Default)]
struct Tally {
    window_start: AtomicU64,
    window_end: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    /// One-way latencies (µs): video, audio.
    latencies_us: [Mutex<Vec<u32>>; 2],
}

impl Tally {
    fn new() -> Arc<Self> {
        let tally = Self::default();
        tally.window_start.store(u64::MAX, Ordering::Relaxed);
        tally.window_end.store(u64::MAX, Ordering::Relaxed);
        Arc::new(tally)
    }

    fn in_window(&self, sent_ns: u64) -> bool {
        sent_ns >= self.window_start.load(Ordering::Relaxed)
            && sent_ns < self.window_end.load(Ordering::Relaxed)
    }

    fn sent(&self, sent_ns: u64, stamps: u64) {
        if self.in_window(sent_ns) {
            self.sent.fetch_add(stamps, Ordering::Relaxed);
        }
    }

    fn received(&self, sent_ns: u64, video: bool) {
        if self.in_window(sent_ns) {
            self.received.fetch_add(1, Ordering::Relaxed);
            let latency = now_ns().saturating_sub(sent_ns) / 1000;
            if let Ok(mut l) = self.latencies_us[usize::from(!video)].lock() {
                l.push(latency.min(u32::MAX as u64) as u32);
            }
        }
    }

    fn open(&self) {
        self.sent.store(0, Ordering::Relaxed);
        self.received.store(0, Ordering::Relaxed);
        for latencies in &self.latencies_us {
            if let Ok(mut l) = latencies.lock() {
                l.clear();
            }
        }
        self.window_end.store(u64::MAX, Ordering::Relaxed);
        self.window_start.store(now_ns(), Ordering::Relaxed);
    }

    fn close(&self) {
        self.window_end.store(now_ns(), Ordering::Relaxed);
    }

    /// Loss ratio and one-way latency percentiles (µs): [video p50, p99, audio p50, p99].
    fn result(&self) -> (f64, [u32; 4]) {
        let sent = self.sent.load(Ordering::Relaxed).max(1);
        let received = self.received.load(Ordering::Relaxed);
        let loss = 1.0 - (received as f64 / sent as f64).min(1.0);
        let mut out = [0; 4];
        for (i, latencies) in self.latencies_us.iter().enumerate() {
            let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
            l.sort_unstable();
            let pick = |q: f64| {
                l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0)
            };
            out[i * 2] = pick(0.5);
            out[i * 2 + 1] = pick(0.99);
        }
        (loss, out)
    }
}

// ---------------------------------------------------------------------------------------
// The appliance under test, in its own process.

/// Where the appliance answers and the CA it is trusted through.
struct Endpoint {
    https: SocketAddr,
    ca: String,
}

impl Endpoint {
    fn client(&self) -> common::Client {
        common::Client::for_address(self.https, &self.ca, "127.0.0.1")
    }
}

struct Appliance {
    child: Child,
    https: SocketAddr,
    metrics: SocketAddr,
    setup_code: Option<String>,
    ca: String,
}

fn start_appliance(dir: &Path) -> (Appliance, Duration) {
    let config = dir.join("sightline.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[media]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[store]\ncache_mib = {}\n",
            dir.join("data"),
            arg::<usize>("--cache-mib").unwrap_or(sightline::store::DEFAULT_CACHE_BYTES >> 20)
        ),
    )
    .expect("config");
    let started = Instant::now();
    let mut child = Command::new(common::built_binary())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("SIGHTLINE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sightline (build it first: cargo build --release)");
    let banner = common::read_banner(child.stdout.take().expect("stdout"));
    let ready = started.elapsed();
    let ca = std::fs::read_to_string(dir.join("data/tls/ca.pem")).expect("ca");
    (
        Appliance {
            child,
            https: banner.https.expect("console address"),
            metrics: banner.metrics.expect("metrics address"),
            setup_code: banner.setup_code,
            ca,
        },
        ready,
    )
}

impl Appliance {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            https: self.https,
            ca: self.ca.clone(),
        }
    }

    fn client(&self) -> common::Client {
        self.endpoint().client()
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// CPU time (ns): (the process, from /proc/PID/stat, which keeps the time of threads
/// that ended; the threads whose names start with `thread`, from their schedstat).
fn cpu_ns(pid: u32, thread: &str) -> (u64, u64) {
    // utime and stime, in the kernel's fixed USER_HZ of 100 ticks a second.
    let total = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<u64> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>() * 10_000_000)
        })
        .unwrap_or(0);
    let mut named = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim().starts_with(thread) {
                named += ns;
            }
        }
    }
    (total, named)
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    common::metrics_text(addr)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Synthetic peers: str0m standing in for the customer's and the technician's browsers.

struct Sim {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    video_mid: Option<Mid>,
    audio_mid: Mid,
    /// Sends video (the customer) or only audio (the technician).
    sends_video: bool,
}

/// Room for bursts, as the relay has (the kernel caps it at net.core.rmem_max).
fn big_buffers(socket: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(socket, sockopt::RcvBuf, &(4 << 20));
    let _ = setsockopt(socket, sockopt::SndBuf, &(4 << 20));
}

fn sim_rtc(socket: &std::net::UdpSocket) -> (Rtc, SocketAddr) {
    let local = socket.local_addr().expect("local");
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .clear_codecs()
        .enable_vp8(true)
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    (rtc, local)
}

/// How long each WHIP/WHEP POST took to answer.
static POSTS: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

async fn negotiate(
    client: &mut common::Client,
    path: &str,
    headers: &[(&str, &str)],
    customer: bool,
) -> Result<Sim, String> {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    std_socket
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    big_buffers(&std_socket);
    let (mut rtc, local) = sim_rtc(&std_socket);
    let mut api = rtc.sdp_api();
    let video_dir = if customer {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    // The customer's page sends its layers as simulcast; the technician's offers plain
    // receive, and the relay picks one layer for it.
    let simulcast = customer
        .then(|| {
            let mut simulcast = Simulcast::new();
            for rid in video_layers().iter().filter_map(|l| l.rid) {
                simulcast.add_send_layer(SimulcastLayer::new(rid));
            }
            simulcast
        })
        .filter(|s| !s.send.is_empty());
    let video_mid = api.add_media(MediaKind::Video, video_dir, None, None, simulcast);
    let audio_mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let mut all = vec![("content-type", "application/sdp")];
    all.extend_from_slice(headers);
    let posted = Instant::now();
    let response = client
        .request("POST", path, &all, offer.to_sdp_string().into_bytes())
        .await;
    if let Ok(mut posts) = POSTS.lock() {
        posts.push(posted.elapsed());
    }
    if response.status != 201 {
        return Err(format!("{path}: {} {}", response.status, response.text()));
    }
    let answer = SdpAnswer::from_sdp_string(&response.text()).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    Ok(Sim {
        rtc,
        socket: UdpSocket::from_std(std_socket).map_err(|e| e.to_string())?,
        local,
        video_mid: Some(video_mid),
        audio_mid,
        sends_video: customer,
    })
}

/// Drives one synthetic peer until `stop`: str0m's timers, the socket, and the media it
/// sends on schedule. Reports when ICE connected through `connected`.
async fn run_sim(
    mut sim: Sim,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    negotiated_at: Instant,
    connected: Arc<Mutex<Vec<Duration>>>,
    stream: u32,
    media: bool,
) {
    let far = Instant::now() + Duration::from_secs(3600 * 24);
    let (mut next_video, mut next_audio) = (far, far);
    let mut buf = vec![0u8; 2048];
    let mut video_seq = 0u64;
    let mut audio_seq = 0u64;
    let mut frame = Vec::new();
    let pt_of = |rtc: &mut Rtc, mid: Mid, codec: Codec| {
        rtc.writer(mid).and_then(|w| {
            w.payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
        })
    };
    let video_pt = sim
        .video_mid
        .and_then(|m| pt_of(&mut sim.rtc, m, Codec::Vp8));
    let audio_pt = pt_of(&mut sim.rtc, sim.audio_mid, Codec::Opus);
    while !stop.load(Ordering::Relaxed) {
        let timeout = loop {
            match sim.rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sim.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    if let Ok(mut c) = connected.lock() {
                        c.push(negotiated_at.elapsed());
                    }
                    let now = Instant::now();
                    if media {
                        next_audio = now;
                    }
                    if media && sim.sends_video {
                        next_video = now;
                    }
                }
                Ok(Output::Event(Event::MediaData(data))) => {
                    let stride = if Some(data.mid) == sim.video_mid {
                        CHUNK
                    } else {
                        usize::MAX
                    };
                    let start = if stride == CHUNK { VIDEO_HEADER } else { 0 };
                    let mut at = start;
                    while at < data.data.len() {
                        if let Some(sent) = read_stamp(&data.data[at..]) {
                            tally.received(sent, stride == CHUNK);
                        }
                        at = at.saturating_add(stride);
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let next = timeout.min(next_video).min(next_audio);
        tokio::select! {
            r = sim.socket.recv_from(&mut buf) => {
                let mut received = r.ok();
                while let Some((n, source)) = received {
                    if let Ok(contents) = buf[..n].try_into() {
                        let input = Input::Receive(Instant::now(), Receive {
                            proto: Protocol::Udp, source, destination: sim.local, contents,
                        });
                        if sim.rtc.handle_input(input).is_err() {
                            return;
                        }
                    }
                    received = sim.socket.try_recv_from(&mut buf).ok();
                }
            }
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let now = Instant::now();
        if now >= next_video
            && let (Some(mid), Some(pt)) = (sim.video_mid, video_pt)
        {
            let sent = now_ns();
            let keyframe = video_seq.is_multiple_of(KEYFRAME_EVERY);
            let time = MediaTime::from_90khz(video_seq * 90_000 / FPS);
            for layer in video_layers() {
                frame.clear();
                frame.resize(layer.frame_bytes, 0);
                // VP8 frame tag: bit 0 clear marks a keyframe.
                frame[0] = if keyframe { 0x10 } else { 0x11 };
                frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                let mut stamps = 0;
                let mut at = VIDEO_HEADER;
                while layer.stamped && at + 24 <= frame.len() {
                    write_stamp(&mut frame[at..], stream, video_seq, sent);
                    stamps += 1;
                    at += CHUNK;
                }
                if let Some(writer) = sim.rtc.writer(mid) {
                    let writer = match layer.rid {
                        Some(rid) => writer.rid(Rid::from(rid)),
                        None => writer,
                    };
                    let _ = writer.write(pt, now, time, frame.clone());
                }
                tally.sent(sent, stamps);
            }
            video_seq += 1;
            next_video += Duration::from_micros(1_000_000 / FPS);
            if next_video + Duration::from_secs(1) < now {
                next_video = now;
            }
        }
        if now >= next_audio
            && let Some(pt) = audio_pt
        {
            let sent = now_ns();
            let mut packet = [0u8; AUDIO_BYTES];
            write_stamp(&mut packet, stream, audio_seq, sent);
            let time = MediaTime::new(audio_seq * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
            if let Some(writer) = sim.rtc.writer(sim.audio_mid) {
                let _ = writer.write(pt, now, time, packet.to_vec());
            }
            tally.sent(sent, 1);
            audio_seq += 1;
            next_audio += Duration::from_micros(1_000_000 / AUDIO_PER_SECOND);
            if next_audio + Duration::from_secs(1) < now {
                next_audio = now;
            }
        }
        if sim
            .rtc
            .handle_input(Input::Timeout(Instant::now()))
            .is_err()
        {
            return;
        }
    }
}

struct Session {
    id: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Session {
    async fn end(self, admin: &mut common::Client) {
        self.stop.store(true, Ordering::Relaxed);
        let r = admin
            .post_empty(&format!("/api/sessions/{}/end", self.id))
            .await;
        if r.status != 200 && r.status != 204 {
            eprintln!("ending {}: {} {}", self.id, r.status, r.text());
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Keeps reading a WebSocket so the appliance never sees a stalled peer.
fn drain(mut ws: common::Ws, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    use futures_util::StreamExt;
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                Ok(Some(Ok(_))) | Err(_) => {}
                _ => break,
            }
        }
    })
}

/// What a session's media connections carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Media {
    /// Both connections, with video and audio.
    Flowing,
    /// The customer's connection without video, and no technician connection yet: the
    /// console opens its media connection once video flows.
    Waiting,
    /// Both connections up and nothing sent (a paused camera).
    Paused,
}

/// A support session as the API makes it: created by the technician, joined and
/// consented to (camera and microphone) by the customer, then the media connections.
async fn open_session(
    app: &Endpoint,
    admin: &mut common::Client,
    tally: &Arc<Tally>,
    connected: &Arc<Mutex<Vec<Duration>>>,
    stream: u32,
    media: Media,
) -> Result<Session, String> {
    let (id, token, _pin) = common::create_session(admin).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tech = admin.websocket().await;
    common::send(&mut tech, json!({"type": "watch", "session_id": id})).await;
    common::recv_state(&mut tech, "waiting").await;
    let mut customer_client = app.client();
    let mut customer = customer_client.websocket().await;
    let joined = common::join(&mut customer, &token, None).await;
    let keys = common::CustomerKeys::new(&token, joined["key"].as_str().unwrap_or_default());
    common::send(
        &mut customer,
        json!({"type": "consent", "camera": true, "microphone": true}),
    )
    .await;
    common::recv_state(&mut customer, "consented").await;
    let mut tasks = vec![drain(tech, stop.clone()), drain(customer, stop.clone())];

    let whep = format!("/api/sessions/{id}/whep");
    let customer_side = (
        &mut customer_client,
        "/api/invitation/whip",
        keys.headers(&[]),
    );
    let technician_side = (admin, whep.as_str(), vec![("x-sightline-csrf", "1")]);
    let sides = if media == Media::Waiting {
        vec![customer_side]
    } else {
        vec![customer_side, technician_side]
    };
    for (n, (client, path, headers)) in sides.into_iter().enumerate() {
        let started = Instant::now();
        let sim = negotiate(client, path, &headers, n == 0).await?;
        let (tally, stop, connected) = (tally.clone(), stop.clone(), connected.clone());
        tasks.push(tokio::spawn(run_sim(
            sim,
            tally,
            stop,
            started,
            connected,
            stream + n as u32,
            media == Media::Flowing,
        )));
    }
    Ok(Session { id, tasks, stop })
}

/// Process start to listeners bound and store open, on an existing data directory.
fn median_startup(dir: &Path) -> Duration {
    let mut startups = Vec::new();
    for _ in 0..5 {
        let (app, ready) = start_appliance(dir);
        startups.push(ready);
        app.stop();
    }
    percentile(&mut startups, 0.5)
}

/// Prints e.g. "connect (answer received → ICE connected, 80 peers): p50 …, p99 …".
fn print_percentiles(name: &str, span: &str, unit: &str, mut values: Vec<Duration>) {
    let count = values.len();
    let mut ms = |q| percentile(&mut values, q).as_secs_f64() * 1000.0;
    let (p50, p99) = (ms(0.5), ms(0.99));
    println!("{name} ({span}, {count} {unit}): p50 {p50:.1} ms, p99 {p99:.1} ms");
}

fn percentile(values: &mut [Duration], q: f64) -> Duration {
    values.sort_unstable();
    values
        .get(((values.len() as f64 * q) as usize).min(values.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The baseline: a raw UDP fan-out loop.

const BATCH: usize = 32;

/// RTP's fixed header; the floor's packets are this, the payload, and a 16-byte GCM tag.
const RTP_HEADER: usize = 12;
const TAG: usize = 16;

/// The floor's keys: what senders seal with and what the loop opens, and what the loop
/// seals with for the receivers (one each; the nonces differ by the header's counter).
fn floor_keys() -> &'static (LessSafeKey, LessSafeKey) {
    static KEYS: OnceLock<(LessSafeKey, LessSafeKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |byte: u8| {
            LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[byte; 16]).expect("AES-128 key"))
        };
        (key(1), key(2))
    })
}

/// A GCM nonce from an RTP header (SRTP derives it from SSRC, sequence and roll-over
/// counter; here bytes 4..12 carry a counter the sender keeps unique).
fn header_nonce(header: &[u8]) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&header[..RTP_HEADER]);
    Nonce::assume_unique_for_key(nonce)
}

/// Seals `packet` (header, payload, room for the tag) in place.
fn seal(key: &LessSafeKey, packet: &mut [u8]) {
    let (header, rest) = packet.split_at_mut(RTP_HEADER);
    let (payload, tag_room) = rest.split_at_mut(rest.len() - TAG);
    if let Ok(tag) =
        key.seal_in_place_separate_tag(header_nonce(header), Aad::from(&*header), payload)
    {
        tag_room.copy_from_slice(tag.as_ref());
    }
}

/// Opens a sealed packet in place; the payload, if it is authentic.
fn open(key: &LessSafeKey, packet: &mut [u8]) -> Option<usize> {
    if packet.len() < RTP_HEADER + TAG {
        return None;
    }
    let (header, rest) = packet.split_at_mut(RTP_HEADER);
    let nonce = header_nonce(header);
    key.open_in_place(nonce, Aad::from(&*header), rest)
        .ok()
        .map(|plain| plain.len())
}

/// Forwards every datagram to the destinations registered for its source, in batches
/// (recvmmsg/sendmmsg), until `stop`. A datagram starting with "REG" registers its source
/// to be forwarded to the address in its text. With `srtp`, each datagram is opened, and
/// each copy gets its own header and is sealed again, as an SRTP relay must.
fn raw_loop(socket: std::net::UdpSocket, stop: Arc<AtomicBool>, srtp: bool) {
    let fd = socket.as_raw_fd();
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let mut routes: HashMap<SocketAddr, Vec<SockaddrIn>> = HashMap::new();
    let mut bufs = vec![[0u8; 1500]; BATCH];
    // The sealed copies (one per destination), when `srtp`.
    let mut copies = vec![[0u8; 1500]; BATCH * 4];
    let mut counter = 0u64;
    let (ingress, egress) = floor_keys();
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut out: Vec<(usize, usize, SockaddrIn)> = Vec::with_capacity(BATCH * 4);
    while !stop.load(Ordering::Relaxed) {
        out.clear();
        let mut received: Vec<(usize, Option<SockaddrIn>)> = Vec::with_capacity(BATCH);
        {
            let mut iovs: Vec<[IoSliceMut; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            // Blocks for the first datagram (up to the read timeout), then takes what is queued.
            match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => received.extend(msgs.map(|m| (m.bytes, m.address))),
                Err(_) => continue,
            }
        }
        for (i, (len, source)) in received.iter().enumerate() {
            let Some(source) = source else { continue };
            let source = SocketAddr::V4((*source).into());
            if bufs[i].starts_with(b"REG ") {
                if let Some(dest) = std::str::from_utf8(&bufs[i][4..*len])
                    .ok()
                    .and_then(|s| s.trim().parse::<std::net::SocketAddrV4>().ok())
                {
                    routes
                        .entry(source)
                        .or_default()
                        .push(SockaddrIn::from(dest));
                }
                continue;
            }
            if srtp {
                let Some(plain) = open(ingress, &mut bufs[i][..*len]) else {
                    continue;
                };
                for dest in routes.get(&source).into_iter().flatten() {
                    let Some(copy) = copies.get_mut(out.len()) else {
                        break;
                    };
                    // The header rewrite a forwarder does (SSRC, sequence), with the
                    // counter that keeps this key's nonces unique.
                    copy[..RTP_HEADER + plain].copy_from_slice(&bufs[i][..RTP_HEADER + plain]);
                    counter += 1;
                    copy[4..12].copy_from_slice(&counter.to_be_bytes());
                    copy[2..4].copy_from_slice(&(counter as u16).to_be_bytes());
                    seal(egress, &mut copy[..*len]);
                    out.push((out.len(), *len, *dest));
                }
                continue;
            }
            for dest in routes.get(&source).into_iter().flatten() {
                out.push((i, *len, *dest));
            }
        }
        let buffers = if srtp { &copies[..] } else { &bufs[..] };
        for group in out.chunks(BATCH) {
            let slices: Vec<[IoSlice; 1]> = group
                .iter()
                .map(|(i, len, _)| [IoSlice::new(&buffers[*i][..*len])])
                .collect();
            let addrs: Vec<Option<SockaddrIn>> = group.iter().map(|(_, _, d)| Some(*d)).collect();
            let _ = sendmmsg(
                fd,
                &mut send_headers,
                &slices,
                &addrs,
                [],
                MsgFlags::empty(),
            );
        }
        RAW_EGRESS.fetch_add(out.len() as u64, Ordering::Relaxed);
    }
}

static RAW_EGRESS: AtomicU64 = AtomicU64::new(0);

/// One raw "session": the customer's video and audio to the technician, the technician's
/// audio to the customer, as plain UDP with the same sizes and rates (sealed, for the
/// floor: a header, the stamped payload and a tag).
async fn raw_session(
    relay: SocketAddr,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    stream: u32,
    srtp: bool,
) {
    let bind = || async {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        big_buffers(&socket);
        socket
    };
    let (video_tx, audio_tx, tech_audio_tx) = (bind().await, bind().await, bind().await);
    let (tech_rx, customer_rx) = (bind().await, bind().await);
    for (from, to) in [
        (&video_tx, &tech_rx),
        (&audio_tx, &tech_rx),
        (&tech_audio_tx, &customer_rx),
    ] {
        let message = format!("REG {}", to.local_addr().expect("addr"));
        let _ = from.send_to(message.as_bytes(), relay).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let receive = move |socket: UdpSocket, tally: Arc<Tally>, stop: Arc<AtomicBool>| async move {
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await
            else {
                continue;
            };
            let stamp = if srtp {
                open(&floor_keys().1, &mut buf[..n]).and_then(|_| read_stamp(&buf[RTP_HEADER..n]))
            } else {
                read_stamp(&buf[..n])
            };
            if let Some(sent) = stamp {
                tally.received(sent, n > AUDIO_BYTES + 40);
            }
        }
    };
    let rx1 = tokio::spawn(receive(tech_rx, tally.clone(), stop.clone()));
    let rx2 = tokio::spawn(receive(customer_rx, tally.clone(), stop.clone()));
    // Sizes of what the relay sends: the stamped layer's frame in RTP packets of at most
    // ~1150 B, 200 B audio. A layer the relay would drop goes to the loop unrouted (read
    // and dropped there too).
    let layers = video_layers();
    let forwarded = layers
        .iter()
        .find(|l| l.stamped)
        .map_or(0, |l| l.frame_bytes);
    let per_frame = forwarded.div_ceil(1150);
    let video_packet = forwarded / per_frame + 60;
    let dropped: Vec<usize> = layers
        .iter()
        .filter(|l| !l.stamped)
        .map(|l| l.frame_bytes.div_ceil(1150))
        .collect();
    let unrouted_tx = bind().await;
    let mut video_tick = tokio::time::interval(Duration::from_micros(1_000_000 / FPS));
    let mut audio_tick = tokio::time::interval(Duration::from_micros(1_000_000 / AUDIO_PER_SECOND));
    let mut packet = vec![0u8; video_packet];
    let mut seq = 0u64;
    // Stamps the packet's first `len` bytes (and seals them, for the floor).
    let prepare = |packet: &mut [u8], seq: u64| {
        let sent = now_ns();
        if srtp {
            packet[0] = 0x80;
            packet[4..8].copy_from_slice(&stream.to_be_bytes());
            packet[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
            write_stamp(&mut packet[RTP_HEADER..], stream, seq, sent);
            seal(&floor_keys().0, packet);
        } else {
            write_stamp(packet, stream, seq, sent);
        }
        sent
    };
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = video_tick.tick() => {
                for _ in 0..per_frame {
                    let sent = prepare(&mut packet, seq);
                    seq += 1;
                    let _ = video_tx.send_to(&packet, relay).await;
                    tally.sent(sent, 1);
                }
                for packets in &dropped {
                    for _ in 0..*packets {
                        let _ = unrouted_tx.send_to(&packet, relay).await;
                    }
                }
            }
            _ = audio_tick.tick() => {
                for socket in [&audio_tx, &tech_audio_tx] {
                    let sent = prepare(&mut packet[..AUDIO_BYTES + 40], seq);
                    seq += 1;
                    let _ = socket.send_to(&packet[..AUDIO_BYTES + 40], relay).await;
                    tally.sent(sent, 1);
                }
            }
        }
    }
    let _ = rx1.await;
    let _ = rx2.await;
}

struct Step {
    sessions: usize,
    egress_pps: f64,
    /// Egress RTP media packets per second (for the loops: every packet).
    media_pps: f64,
    /// Egress RTP padding packets per second.
    padding_pps: f64,
    forwarder_cores: f64,
    process_cores: f64,
    us_per_packet: f64,
    /// Forwarding threads' CPU per egress media packet.
    us_per_media: f64,
    loss: f64,
    /// One-way latency (µs): video p50, p99, audio p50, p99.
    latency: [u32; 4],
    /// CPU of this process (the load generator and, for the raw steps, the raw loop).
    generator_cores: f64,
}

fn print_step(label: &str, s: &Step) {
    println!(
        "  {label:<5} {:>4} sessions: {:>6.0} egress pkt/s, {:>6.0} of them media; forwarding {:.2} cores = {:>5.1} µs/pkt, {:>5.1} µs/media pkt (process {:.2}, generator {:.2} cores); loss {:.3} %; one-way ms video p50 {:.1} p99 {:.1}, audio p50 {:.1} p99 {:.1}",
        s.sessions,
        s.egress_pps,
        s.media_pps,
        s.forwarder_cores,
        s.us_per_packet,
        s.us_per_media,
        s.process_cores,
        s.generator_cores,
        s.loss * 100.0,
        s.latency[0] as f64 / 1000.0,
        s.latency[1] as f64 / 1000.0,
        s.latency[2] as f64 / 1000.0,
        s.latency[3] as f64 / 1000.0,
    );
}

async fn raw_step(sessions: usize, seconds: u64, srtp: bool) -> Step {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    big_buffers(&socket);
    let relay = socket.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let loop_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("raw-forwarder".into())
        .spawn(move || raw_loop(socket, loop_stop, srtp))
        .expect("thread");
    let tally = Tally::new();
    let mut tasks = Vec::new();
    for n in 0..sessions {
        tasks.push(tokio::spawn(raw_session(
            relay,
            tally.clone(),
            stop.clone(),
            n as u32,
            srtp,
        )));
    }
    tokio::time::sleep(WARM_UP).await;
    let step = measure(
        std::process::id(),
        "raw-forwarder",
        sessions,
        seconds,
        &tally,
        || async {
            let sent = RAW_EGRESS.load(Ordering::Relaxed);
            (sent, sent, 0)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let _ = thread.join();
    step
}

async fn measure<F, Fut>(
    pid: u32,
    thread: &str,
    sessions: usize,
    seconds: u64,
    tally: &Tally,
    egress: F,
) -> Step
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u64, u64, u64)>,
{
    let (e0, m0, f0) = egress().await;
    let (p0, t0) = cpu_ns(pid, thread);
    let (g0, _) = cpu_ns(std::process::id(), "");
    let w0 = Instant::now();
    tally.open();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    tally.close();
    let (e1, m1, f1) = egress().await;
    let (p1, t1) = cpu_ns(pid, thread);
    let (g1, _) = cpu_ns(std::process::id(), "");
    let wall = w0.elapsed().as_secs_f64();
    // Late packets of the window still count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (loss, latency) = tally.result();
    let packets = (e1 - e0).max(1);
    let media = (m1 - m0).max(1);
    Step {
        sessions,
        egress_pps: packets as f64 / wall,
        media_pps: media as f64 / wall,
        padding_pps: (f1 - f0) as f64 / wall,
        forwarder_cores: (t1 - t0) as f64 / 1e9 / wall,
        process_cores: (p1 - p0) as f64 / 1e9 / wall,
        us_per_packet: (t1 - t0) as f64 / 1000.0 / packets as f64,
        us_per_media: (t1 - t0) as f64 / 1000.0 / media as f64,
        loss,
        latency,
        generator_cores: (g1 - g0) as f64 / 1e9 / wall,
    }
}

fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() {
    epoch();
    let levels: Vec<usize> = arg::<String>("--levels")
        .unwrap_or_else(|| "5,10,20,40".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seconds: u64 = arg("--seconds").unwrap_or(10);
    let soak: usize = arg("--soak").unwrap_or(10_000);
    let idle: usize = arg("--idle").unwrap_or(0);
    let dir = tempfile::tempdir().expect("tempdir");

    println!(
        "Sightline relay benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let (app, _) = start_appliance(dir.path());
    let mut admin = app.client();
    let code = app.setup_code.clone().expect("setup code");
    let r = admin
        .post_json(
            "/api/setup",
            &json!({"code": code, "email": "bench@example.com", "password": "Camera4support",
                    "display_name": "Bench", "organisation": "Bench"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.stop();

    println!(
        "start-up to ready on an existing data directory: median {:.0} ms of 5",
        median_startup(dir.path()).as_secs_f64() * 1000.0
    );

    let (app, _) = start_appliance(dir.path());
    let pid = app.child.id();
    let mut admin = app.client();
    let r = admin
        .post_json(
            "/api/login",
            &json!({"email": "bench@example.com", "password": "Camera4support"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    println!(
        "\nload steps ({seconds} s each after {} s warm-up); egress = datagrams sent by the forwarder",
        WARM_UP.as_secs()
    );
    let tally = Tally::new();
    let connected = Arc::new(Mutex::new(Vec::new()));
    let mut sessions: Vec<Session> = Vec::new();
    // The loops first, while nothing else runs.
    let mut baselines = Vec::new();
    for &level in &levels {
        let raw = raw_step(level, seconds, false).await;
        print_step("raw", &raw);
        let floor = raw_step(level, seconds, true).await;
        print_step("floor", &floor);
        baselines.push((raw, floor));
    }
    if idle > 0 {
        idle_steps(&app, &mut admin, idle, seconds).await;
    }
    let base_rss = status_field(pid, "VmRSS:");
    let mut results = Vec::new();
    for (&level, (raw, floor)) in levels.iter().zip(baselines) {
        while sessions.len() < level {
            let stream = (sessions.len() * 2) as u32;
            let endpoint = app.endpoint();
            let media = Media::Flowing;
            match open_session(&endpoint, &mut admin, &tally, &connected, stream, media).await {
                Ok(s) => sessions.push(s),
                Err(e) => {
                    eprintln!("session {} failed: {e}", sessions.len());
                    break;
                }
            }
        }
        tokio::time::sleep(WARM_UP).await;
        let rss = status_field(pid, "VmRSS:");
        let relay = measure(pid, "media-", sessions.len(), seconds, &tally, || {
            sent_by_relay(app.metrics)
        })
        .await;
        print_step("relay", &relay);
        println!(
            "         CPU per egress media packet: relay/raw {:.2}, relay/floor {:.2}; resident memory {:.0} KiB per session",
            relay.us_per_media / raw.us_per_media,
            relay.us_per_media / floor.us_per_media,
            (rss.saturating_sub(base_rss)) as f64 / sessions.len().max(1) as f64,
        );
        results.push((raw, floor, relay));
    }
    println!();
    let connect = connected.lock().map(|c| c.clone()).unwrap_or_default();
    print_percentiles(
        "connect",
        "answer received → ICE connected",
        "peers",
        connect,
    );
    let posts = POSTS.lock().map(|p| p.clone()).unwrap_or_default();
    print_percentiles(
        "WHIP/WHEP POST",
        "offer sent → answer received",
        "posts",
        posts,
    );
    summarise(&results);
    for session in sessions.drain(..) {
        session.end(&mut admin).await;
    }

    if soak > 0 {
        run_soak(&app, &admin, soak).await;
    }
    app.stop();
    if soak > 0 {
        // The store now holds the soak's history (sessions, audit entries): start-up must
        // not grow with it.
        println!(
            "  start-up to ready with the soak's history in the data directory: median {:.0} ms of 5",
            median_startup(dir.path()).as_secs_f64() * 1000.0
        );
    }
    let _ = std::io::stdout().flush();
}

/// Relay egress as the metrics count it: (every datagram, RTP media, RTP padding).
async fn sent_by_relay(metrics: SocketAddr) -> (u64, u64, u64) {
    (
        metric(metrics, "sightline_media_datagrams_sent_total").await,
        metric(metrics, "sightline_media_packets_sent_total").await,
        metric(metrics, "sightline_media_padding_sent_total").await,
    )
}

/// What sessions without video cost: the relay process's CPU with `count` of them, less
/// its CPU with none, per session — waiting for the camera, then with it paused.
async fn idle_steps(app: &Appliance, admin: &mut common::Client, count: usize, seconds: u64) {
    let pid = app.child.id();
    let tally = Tally::new();
    let connected = Arc::new(Mutex::new(Vec::new()));
    let alone = measure(pid, "media-", 0, seconds, &tally, || {
        sent_by_relay(app.metrics)
    })
    .await;
    println!(
        "\nsessions without video ({seconds} s each; the relay process alone: {:.4} cores, {:.0} datagrams/s)",
        alone.process_cores, alone.egress_pps
    );
    for (media, what) in [
        (
            Media::Waiting,
            "waiting for video (no technician media connection yet)",
        ),
        (Media::Paused, "both media connections up, nothing sent"),
    ] {
        let mut idlers = Vec::new();
        for _ in 0..count {
            match open_session(&app.endpoint(), admin, &tally, &connected, 0, media).await {
                Ok(s) => idlers.push(s),
                Err(e) => eprintln!("idle session {} failed: {e}", idlers.len()),
            }
        }
        tokio::time::sleep(WARM_UP).await;
        let step = measure(pid, "media-", count, seconds, &tally, || {
            sent_by_relay(app.metrics)
        })
        .await;
        let n = idlers.len().max(1) as f64;
        println!(
            "  {} sessions {what}: {:.5} cores and {:.1} datagrams/s ({:.1} padding) per session (target ≤ 0.0005 cores)",
            idlers.len(),
            (step.process_cores - alone.process_cores).max(0.0) / n,
            (step.egress_pps - alone.egress_pps).max(0.0) / n,
            step.padding_pps / n,
        );
        for session in idlers {
            session.end(admin).await;
        }
    }
}

fn summarise(results: &[(Step, Step, Step)]) {
    let Some((raw, floor, relay)) = results
        .iter()
        .filter(|(_, _, relay)| relay.loss < 0.005)
        .max_by_key(|(_, _, relay)| relay.sessions)
        .or(results.first())
    else {
        return;
    };
    let lossy = results.iter().find(|(_, _, relay)| relay.loss >= 0.005);
    println!(
        "\nsummary (at {} sessions, the largest step under 0.5 % loss):",
        relay.sessions
    );
    println!(
        "  CPU per egress media packet: relay {:.1} µs, raw loop {:.1} µs, floor {:.1} µs: relay/raw {:.2} (target ≤ 2.5), relay/floor {:.2}",
        relay.us_per_media,
        raw.us_per_media,
        floor.us_per_media,
        relay.us_per_media / raw.us_per_media,
        relay.us_per_media / floor.us_per_media,
    );
    println!(
        "  egress media packets/s per core (forwarding threads): relay {:.0}, raw {:.0}, floor {:.0} (target ≥ 50k)",
        1e6 / relay.us_per_media,
        1e6 / raw.us_per_media,
        1e6 / floor.us_per_media,
    );
    let per_session_cores = relay.process_cores / relay.sessions as f64;
    println!(
        "  relay process {:.4} cores per session → about {:.0} sessions on 2 cores (extrapolated; target ≥ 300)",
        per_session_cores,
        2.0 / per_session_cores
    );
    match lossy {
        Some((_, _, s)) => println!(
            "  loss first exceeded 0.5 % at {} sessions ({:.2} %)",
            s.sessions,
            s.loss * 100.0
        ),
        None => println!("  loss stayed under 0.5 % at every step"),
    }
}

/// Sessions opened and closed at once during the soak.
const SOAK_PARALLEL: usize = 4;

async fn run_soak(app: &Appliance, admin: &common::Client, cycles: usize) {
    let pid = app.child.id();
    println!(
        "\nsoak: {cycles} session join/leave cycles, {SOAK_PARALLEL} at a time (customer and technician connect, then the session ends)"
    );
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let sample = || {
        (
            status_field(pid, "VmRSS:"),
            descriptors(pid),
            status_field(pid, "Threads:"),
        )
    };
    let mut after_first = None;
    let workers: Vec<_> = (0..SOAK_PARALLEL)
        .map(|worker| {
            let mut client = app.client();
            client.cookie = admin.cookie.clone();
            let (done, failures) = (done.clone(), failures.clone());
            let app = app.endpoint();
            let share = cycles / SOAK_PARALLEL + usize::from(worker < cycles % SOAK_PARALLEL);
            tokio::spawn(async move {
                let tally = Tally::new();
                let connected = Arc::new(Mutex::new(Vec::new()));
                let mut ok = 0;
                for _ in 0..share {
                    let media = Media::Flowing;
                    match open_session(&app, &mut client, &tally, &connected, 0, media).await {
                        Ok(session) => {
                            ok += 1;
                            // Until both are connected, so every cycle exercises the media path.
                            let deadline = Instant::now() + Duration::from_secs(5);
                            while connected.lock().map_or(0, |c| c.len()) < ok * 2
                                && Instant::now() < deadline
                            {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                            if let Ok(mut c) = connected.lock() {
                                c.resize(ok * 2, Duration::ZERO);
                            }
                            session.end(&mut client).await;
                        }
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("soak: {e}");
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let first_mark = 1000.min(cycles) as u64;
    // Resident memory every 1,000 cycles: a bounded cache levels off, a leak does not.
    let mut curve = Vec::new();
    while done.load(Ordering::Relaxed) < cycles as u64 {
        let so_far = done.load(Ordering::Relaxed);
        if after_first.is_none() && so_far >= first_mark {
            after_first = Some(sample());
        }
        if so_far >= (curve.len() as u64 + 1) * 1000 {
            curve.push(format!("{} MiB", status_field(pid, "VmRSS:") / 1024));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in workers {
        let _ = worker.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = sample();
    curve.push(format!("{} MiB at the end", end.0 / 1024));
    let first = after_first.unwrap_or(end);
    println!(
        "  {} cycles in {:.0} s ({} failed): resident memory after {first_mark}: {} KiB, at the end: {} KiB ({:+.1} %); descriptors {} → {}; threads {} → {}",
        cycles,
        started.elapsed().as_secs_f64(),
        failures.load(Ordering::Relaxed),
        first.0,
        end.0,
        (end.0 as f64 / first.0.max(1) as f64 - 1.0) * 100.0,
        first.1,
        end.1,
        first.2,
        end.2
    );
    println!("  resident memory every 1,000 cycles: {}", curve.join(", "));
}
