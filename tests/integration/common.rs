//! Test harness: the whole appliance in-process on ephemeral loopback ports, a manual
//! clock, and a small HTTPS + WebSocket client that trusts only the appliance's CA.

// Each user (a topic of the tests, a benchmark) takes the part of the harness it needs.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use serde_json::Value;
use sightline::appliance::{self, Running};
use sightline::clock::ManualClock;
use sightline::config::Config;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const START_MS: u64 = 1_800_000_000_000;

/// A TLS client that trusts only the certificates in `ca_pem`.
pub fn trusting(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Every refusal the appliance sent is one its OpenAPI description lists for that route:
/// the description is checked against what every test made the API answer.
fn assert_documented(running: &Running) {
    let undocumented = running.api().undocumented.seen();
    assert!(
        undocumented.is_empty(),
        "refusals missing from the API description (add them to the route's errors): {undocumented:#?}"
    );
}

impl Drop for TestAppliance {
    fn drop(&mut self) {
        if let Some(running) = &self.running
            && !std::thread::panicking()
        {
            assert_documented(running);
        }
    }
}

pub struct TestAppliance {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub config: Config,
}

impl TestAppliance {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_supervised(adjust, None).await
    }

    /// Starts as `systemd` would supervise it (readiness and watchdog to its socket).
    pub async fn start_supervised(
        adjust: impl FnOnce(&mut Config),
        systemd: Option<sightline::systemd::SystemdNotify>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        config.http.listen = "127.0.0.1:0".parse().expect("addr");
        config.media.listen = "127.0.0.1:0".parse().expect("addr");
        config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
        adjust(&mut config);
        let clock = ManualClock::new(START_MS);
        let running = appliance::start_supervised(config.clone(), Arc::new(clock.clone()), systemd)
            .await
            .expect("appliance starts");
        Self {
            running: Some(running),
            dir,
            clock,
            config,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().https_addr
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            assert_documented(&running);
            running.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops and starts again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        // The previous instance's last store handles may still be dropping on other
        // runtime threads; wait for the store lock like a restarting service would.
        let mut attempts = 0;
        let running = loop {
            match appliance::start(self.config.clone(), Arc::new(self.clock.clone())).await {
                Ok(running) => break running,
                Err(appliance::StartError::Store(sightline::store::StoreError::InUse {
                    ..
                })) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("appliance restarts: {e}"),
            }
        };
        self.running = Some(running);
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr(), &self.running().ca_pem, "127.0.0.1")
    }

    /// A client whose connections come from another loopback address.
    pub fn client_from(&self, source: &str) -> Client {
        Client::new(self.addr(), &self.running().ca_pem, source)
    }

    /// Completes first-run setup and returns the signed-in admin's client.
    pub async fn set_up(&self) -> Client {
        let mut client = self.client();
        let code = self.running().setup_code.clone().expect("setup code");
        let response = client
            .post_json(
                "/api/setup",
                &serde_json::json!({
                    "code": code,
                    "email": "Ada@Example.com",
                    "password": "Camera4support",
                    "display_name": "Ada Lovelace",
                    "organisation": "Example Utilities",
                }),
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        client
    }

    pub fn audit_kinds(&self) -> Vec<String> {
        self.running()
            .audit_entries()
            .expect("audit")
            .into_iter()
            .map(|e| {
                serde_json::to_value(&e.kind)
                    .expect("kind")
                    .as_str()
                    .expect("str")
                    .to_owned()
            })
            .collect()
    }
}

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }
}

#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    tls: TlsConnector,
    source: IpAddr,
    pub cookie: Option<String>,
}

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

impl Client {
    /// A client for an appliance at `addr` trusting `ca_pem`, connecting from `source`.
    pub fn for_address(addr: SocketAddr, ca_pem: &str, source: &str) -> Self {
        Self::new(addr, ca_pem, source)
    }

    fn new(addr: SocketAddr, ca_pem: &str, source: &str) -> Self {
        Self {
            addr,
            tls: trusting(ca_pem),
            source: source.parse().expect("source ip"),
            cookie: None,
        }
    }

    pub async fn connect(&self) -> TlsStream<TcpStream> {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(self.source, 0))
            .expect("bind source");
        let tcp = socket.connect(self.addr).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        self.tls
            .connect(name, tcp)
            .await
            .expect("TLS handshake with a certificate from the appliance CA")
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let stream = self.connect().await;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("http handshake");
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder().method(method).uri(path);
        // A test may send a Host of its own (a forged one).
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            builder = builder.header("host", format!("127.0.0.1:{}", self.addr.port()));
        }
        if let Some(cookie) = &self.cookie {
            builder = builder.header("cookie", cookie);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::from(body))).expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        if let Some(set) = headers.get("set-cookie") {
            let value = set.to_str().expect("ascii");
            let pair = value.split(';').next().expect("pair").to_owned();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], Vec::new()).await
    }

    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, Vec::new()).await
    }

    pub async fn post_json(&mut self, path: &str, body: &Value) -> Response {
        self.request(
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("x-sightline-csrf", "1"),
            ],
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// A POST without a body, with the CSRF header, as the console sends it.
    pub async fn post_empty(&mut self, path: &str) -> Response {
        self.request("POST", path, &[("x-sightline-csrf", "1")], Vec::new())
            .await
    }

    /// Any method with a JSON body and the CSRF header, as the console sends it.
    pub async fn json(&mut self, method: &str, path: &str, body: &Value) -> Response {
        self.request(
            method,
            path,
            &[
                ("content-type", "application/json"),
                ("x-sightline-csrf", "1"),
            ],
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// Opens the signaling WebSocket as a page of `origin` would; the HTTP status when
    /// the appliance refuses the upgrade.
    pub async fn websocket_from_origin(&self, origin: &str) -> Result<Ws, u16> {
        let stream = self.connect().await;
        let mut request = format!("wss://127.0.0.1:{}/api/ws", self.addr.port())
            .into_client_request()
            .expect("ws request");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("origin"));
        if let Some(cookie) = &self.cookie {
            request
                .headers_mut()
                .insert("cookie", cookie.parse().expect("cookie"));
        }
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("ws handshake: {e}"),
        }
    }

    /// Opens the signaling WebSocket (with this client's cookie, if any).
    pub async fn websocket(&self) -> Ws {
        let stream = self.connect().await;
        let mut request = format!("wss://127.0.0.1:{}/api/ws", self.addr.port())
            .into_client_request()
            .expect("ws request");
        if let Some(cookie) = &self.cookie {
            request
                .headers_mut()
                .insert("cookie", cookie.parse().expect("cookie"));
        }
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("ws handshake");
        ws
    }
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .expect("ws send");
}

pub async fn send_raw(ws: &mut Ws, message: Message) {
    ws.send(message).await.expect("ws send");
}

/// The next JSON message, or None when the server closed the socket.
pub async fn recv(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).expect("server sends JSON"));
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads messages until one has the given type.
pub async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let message = recv(ws)
            .await
            .unwrap_or_else(|| panic!("socket closed before a {kind} message"));
        if message["type"] == kind {
            return message;
        }
    }
}

/// Reads state messages until the session reaches `state`.
pub async fn recv_state(ws: &mut Ws, state: &str) -> Value {
    loop {
        let message = recv_type(ws, "state").await;
        if message["session"]["state"] == state {
            return message;
        }
    }
}

/// Signs in with email and password; returns the client and the stage reached.
pub async fn login(app: &TestAppliance, email: &str, password: &str) -> (Client, String) {
    let mut client = app.client();
    let response = client
        .post_json(
            "/api/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(response.status, 200, "login {email}: {}", response.text());
    let stage = response.json()["stage"].as_str().expect("stage").to_owned();
    (client, stage)
}

/// The current TOTP code for a base32 secret at the appliance's (manual) time.
pub fn totp_code(secret_base32: &str, unix_secs: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_base32).expect("base32 secret");
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_account_name("test")
        .build()
        .expect("totp")
        .generate(unix_secs)
        .to_string()
}

/// Creates a support session; returns (session id, token, pin).
pub async fn create_session(admin: &mut Client) -> (String, String, String) {
    let response = admin.post_empty("/api/sessions").await;
    assert_eq!(response.status, 201, "{}", response.text());
    let body = response.json();
    let link = body["link"].as_str().expect("link").to_owned();
    let token = link
        .split_once("/c#")
        .expect("token in fragment")
        .1
        .to_owned();
    (
        body["session"]["id"].as_str().expect("id").to_owned(),
        token,
        body["pin"].as_str().expect("pin").to_owned(),
    )
}

/// The Prometheus text from an appliance's metrics listener.
pub async fn metrics_text(addr: std::net::SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let response = sender
        .send_request(
            hyper::Request::get("/metrics")
                .header("host", "localhost")
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// What the customer's page holds once it joined: the invitation token and the device
/// secret the appliance gave it, which every later request from the page carries.
#[derive(Clone, Debug)]
pub struct CustomerKeys {
    pub token: String,
    pub device: String,
    bearer: String,
}

impl CustomerKeys {
    pub fn new(token: &str, device: &str) -> Self {
        Self {
            token: token.to_owned(),
            device: device.to_owned(),
            bearer: format!("Bearer {token}"),
        }
    }

    /// The headers of a request from the page that joined, before `extra`.
    pub fn headers<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut headers = vec![
            ("authorization", self.bearer.as_str()),
            ("x-sightline-device", self.device.as_str()),
        ];
        headers.extend_from_slice(extra);
        headers
    }
}

/// The keys of a customer page from the `device` message that answered its join.
pub fn keys_of(token: &str, device_message: &Value) -> CustomerKeys {
    CustomerKeys::new(token, device_message["key"].as_str().expect("key"))
}

/// A page's media connection, str0m standing in for the browser: video out, audio both
/// ways. Only the SDP is exchanged; no packets flow.
pub struct PageMedia {
    rtc: str0m::Rtc,
    pending: Option<str0m::change::SdpPendingOffer>,
    /// The first offer, as the page would POST it.
    pub offer: String,
}

impl PageMedia {
    pub fn new() -> Self {
        use str0m::media::{Direction, MediaKind};
        let mut rtc = str0m::Rtc::builder()
            .set_crypto_provider(std::sync::Arc::new(str0m::crypto::from_feature_flags()))
            .build(std::time::Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        Self {
            rtc,
            pending: Some(pending),
            offer: offer.to_sdp_string(),
        }
    }

    pub fn accept(&mut self, answer: &str) {
        let answer = str0m::change::SdpAnswer::from_sdp_string(answer).expect("answer");
        let pending = self.pending.take().expect("an offer awaiting its answer");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("accepted");
    }

    /// An ICE restart offer, as the page sends when its network changes.
    pub fn restart(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("restart offer");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }
}

impl Default for PageMedia {
    fn default() -> Self {
        Self::new()
    }
}

/// Joins a session on the customer's socket with the invitation token (and the device
/// secret of an earlier join); returns the first answer: a new device secret (`device`),
/// the session's state (the same device back), or an error.
pub async fn join(ws: &mut Ws, token: &str, device: Option<&str>) -> Value {
    send(
        ws,
        serde_json::json!({"type": "join", "token": token, "device": device}),
    )
    .await;
    recv(ws).await.expect("an answer to join")
}

/// A session the customer has joined and consented to (camera, no microphone), with the
/// technician's and the customer's sockets.
pub async fn consented_session(
    app: &TestAppliance,
    admin: &mut Client,
) -> (String, CustomerKeys, Ws, Ws) {
    let (id, token, _) = create_session(admin).await;
    let (mut tech, mut customer, keys) = watch_and_join(app, admin, &id, &token).await;
    recv_state(&mut customer, "joined").await;
    send(
        &mut customer,
        serde_json::json!({"type": "consent", "camera": true, "microphone": false}),
    )
    .await;
    recv_state(&mut tech, "consented").await;
    (id, keys, tech, customer)
}

/// The technician's console follows a waiting session, then the customer joins it.
pub async fn watch_and_join(
    app: &TestAppliance,
    technician: &Client,
    session_id: &str,
    token: &str,
) -> (Ws, Ws, CustomerKeys) {
    let mut tech = technician.websocket().await;
    send(
        &mut tech,
        serde_json::json!({"type": "watch", "session_id": session_id}),
    )
    .await;
    recv_state(&mut tech, "waiting").await;
    let mut customer = app.client().websocket().await;
    let first = join(&mut customer, token, None).await;
    assert_eq!(
        first["type"], "device",
        "a first join is given a device secret"
    );
    (tech, customer, keys_of(token, &first))
}

/// The `sightline` binary built next to a running example
/// (target/<profile>/examples/x → target/<profile>/sightline).
pub fn built_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|p| p.join("sightline"))
        .expect("binary path")
}

/// What `sightline serve` prints on stdout before it says how to stop it.
#[derive(Default)]
pub struct Banner {
    pub https: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub setup_code: Option<String>,
}

/// Reads a serving appliance's stdout up to "Stop it with", then keeps draining it on a
/// thread so the child never blocks on a full pipe.
pub fn read_banner(stdout: std::process::ChildStdout) -> Banner {
    use std::io::BufRead;
    let address = |value: &str, scheme: &str, suffix: &str| {
        value
            .trim()
            .trim_start_matches(scheme)
            .trim_end_matches(suffix)
            .parse()
            .ok()
    };
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut banner = Banner::default();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if let Some(url) = line.strip_prefix("Console:") {
            banner.https = address(url, "https://", "/");
        }
        if let Some(url) = line.strip_prefix("Metrics:") {
            banner.metrics = address(url, "http://", "/metrics");
        }
        if let Some(code) = line.strip_prefix("Setup code:") {
            banner.setup_code = Some(code.trim().to_owned());
        }
        if line.starts_with("Stop it with") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    banner
}

/// The binary serving `data_dir` on ephemeral loopback ports (as the crash and latency
/// programs run it): the child, what it printed, and how long it took to be ready.
pub fn serve_binary(
    binary: &std::path::Path,
    data_dir: &std::path::Path,
) -> (std::process::Child, Banner, Duration) {
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--media-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("SIGHTLINE_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sightline (build it first: cargo build --release)");
    let banner = read_banner(child.stdout.take().expect("stdout"));
    (child, banner, started.elapsed())
}

/// Runs the `sightline` binary on a data directory (an offline command).
pub fn sightline_at(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    // Set for integration tests; the examples that share this file use the binary
    // built next to them.
    let binary =
        option_env!("CARGO_BIN_EXE_sightline").map_or_else(built_binary, std::path::PathBuf::from);
    std::process::Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run sightline")
}

/// An account made by the operator's CLI on a stopped appliance: (account id, the
/// admin's temporary password).
pub fn create_account_offline(
    data_dir: &std::path::Path,
    organisation: &str,
    admin_email: &str,
) -> (String, String) {
    let out = sightline_at(
        data_dir,
        &[
            "admin",
            "account",
            "create",
            "--organisation",
            organisation,
            "--admin-email",
            admin_email,
            "--admin-name",
            "Bob",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
            .to_owned()
    };
    (field("account "), field("temporary password: "))
}

/// One sign-in attempt from a fresh client.
pub async fn try_login(app: &TestAppliance, email: &str, password: &str) -> Response {
    app.client()
        .post_json(
            "/api/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
}

pub const TECH_PASSWORD: &str = "Tangerine kettle 47";

/// An admin creates a technician with a temporary password.
pub async fn create_technician(admin: &mut Client, email: &str, groups: Vec<String>) -> String {
    let response = admin
        .json(
            "POST",
            "/api/users",
            &serde_json::json!({"email": email, "display_name": "Tess Tech", "role": "technician",
                    "password": TECH_PASSWORD, "group_ids": groups}),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()["id"].as_str().expect("id").to_owned()
}

/// An admin creates a technician group named `name` with `settings` (the group's flags);
/// returns its id.
pub async fn create_group(admin: &mut Client, name: &str, settings: Value) -> String {
    let mut body = settings;
    body["name"] = Value::from(name);
    let response = admin.json("POST", "/api/groups", &body).await;
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()["id"].as_str().expect("id").to_owned()
}

/// An admin changes the account's settings (`policy`, `subscription`), which must succeed.
pub async fn change_account(admin: &mut Client, change: Value) {
    let response = admin.json("PATCH", "/api/account", &change).await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// Signs in a user created by an admin: they must choose their own password first.
pub async fn first_login(app: &TestAppliance, email: &str) -> Client {
    let (mut client, stage) = login(app, email, TECH_PASSWORD).await;
    assert_eq!(stage, "change_password");
    let changed = client
        .json(
            "POST",
            "/api/me/password",
            &serde_json::json!({"current": TECH_PASSWORD, "new": "Orchid lantern 93 quay"}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    client
}

/// The first bytes of a PNG file of the given size: enough for the appliance to know
/// what it is and how large, which is all it checks.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(b"IHDR");
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0x5a; 64]);
    bytes
}

pub async fn upload(
    app: &TestAppliance,
    keys: &CustomerKeys,
    request: &str,
    body: Vec<u8>,
) -> Response {
    app.client()
        .request(
            "POST",
            &format!("/api/invitation/stills/{request}"),
            &keys.headers(&[("content-type", "image/png")]),
            body,
        )
        .await
}
