//! What the fuzz targets share: one appliance per fuzzing process, started in a temporary
//! directory with an account admin signed in, a second technician, a group, and a live
//! session whose customer has joined and consented — so that a fuzzed request reaches the
//! handler behind the access checks, as a signed-in caller's would.
//!
//! Requests go through the router the HTTPS listener serves (`Running::router`), without
//! TLS, carrying the connection details the listener adds. What every answer must be:
//! never a server error, and every refusal typed JSON with a listed code.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sightline::api::{ERROR_CODES, Route};
use sightline::appliance::{self, Running};
use sightline::auth::Principal;
use sightline::clock::ManualClock;
use sightline::config::Config;
use sightline::http::ConnInfo;
use sightline::ids::SessionId;
use sightline::live::{Attachment, ClientMessage, ServerMessage};
use tokio::sync::mpsc::UnboundedReceiver;
use tower::ServiceExt;

pub const ADMIN_EMAIL: &str = "ada@example.com";
pub const ADMIN_PASSWORD: &str = "Camera4support";

/// The answer to one request.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A participant attached to the live session, as its WebSocket task would hold it.
pub struct Participant {
    pub attachment: Attachment,
    pub outbox: UnboundedReceiver<ServerMessage>,
}

impl Participant {
    /// Drops what the room sent this participant (the socket would have written it).
    pub fn drain(&mut self) -> Vec<ServerMessage> {
        let mut messages = Vec::new();
        while let Ok(message) = self.outbox.try_recv() {
            messages.push(message);
        }
        messages
    }
}

/// The live session: its id, the customer's invitation and device secret, and both sides.
pub struct Session {
    pub id: String,
    pub token: String,
    pub pin: String,
    pub device: String,
    pub technician: Participant,
    pub customer: Participant,
}

pub struct Appliance {
    pub rt: tokio::runtime::Runtime,
    running: Option<Running>,
    router: axum::Router,
    pub cookie: String,
    pub admin: Option<Principal>,
    pub user_id: String,
    pub group_id: String,
    pub session: Option<Session>,
    /// Kept until the appliance stops.
    _dir: tempfile::TempDir,
}

/// Where a request comes from: loopback addresses, one per `n`.
pub fn source(n: u16) -> IpAddr {
    let [hi, lo] = n.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(127, 1, hi, lo))
}

impl Appliance {
    /// Every refusal sent so far is one the route's OpenAPI description lists.
    pub fn assert_documented(&self) {
        if let Some(running) = &self.running {
            let undocumented = running.api().undocumented.seen();
            assert!(
                undocumented.is_empty(),
                "refusals missing from the API description: {undocumented:?}"
            );
        }
    }

    /// Starts the appliance and brings it to the state described above.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// The same, with a change to the configuration.
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // On tmpfs where there is one: every acknowledged write is fsync'd.
        let dir = tempfile::Builder::new()
            .prefix("sightline-fuzz-")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        config.http.listen = "127.0.0.1:0".parse().expect("addr");
        config.media.listen = "127.0.0.1:0".parse().expect("addr");
        adjust(&mut config);
        let clock = ManualClock::new(1_800_000_000_000);
        let running = rt
            .block_on(appliance::start(config, Arc::new(clock)))
            .expect("the appliance starts");
        let router = running.router();
        let code = running.setup_code.clone().expect("a setup code");
        let mut appliance = Self {
            rt,
            running: Some(running),
            router,
            cookie: String::new(),
            admin: None,
            user_id: String::new(),
            group_id: String::new(),
            session: None,
            _dir: dir,
        };
        let setup = appliance.request(
            Method::POST,
            "/api/setup",
            &[("content-type", "application/json")],
            json!({
                "code": code,
                "email": ADMIN_EMAIL,
                "password": ADMIN_PASSWORD,
                "display_name": "Ada Lovelace",
                "organisation": "Example Utilities",
            })
            .to_string()
            .into_bytes(),
            source(0),
        );
        assert_eq!(setup.status, StatusCode::OK, "setup");
        let cookie = setup
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        appliance.cookie = cookie;
        let token = appliance.cookie.split_once('=').expect("cookie pair").1;
        appliance.admin = Some(
            appliance
                .running()
                .api()
                .auth
                .authenticate(token)
                .expect("the admin is signed in"),
        );
        let group = appliance.admin_json(Method::POST, "/api/groups", json!({"name": "Field"}));
        appliance.group_id = group["id"].as_str().expect("group id").to_owned();
        let user = appliance.admin_json(
            Method::POST,
            "/api/users",
            json!({
                "email": "grace@example.com",
                "display_name": "Grace Hopper",
                "role": "technician",
                "password": "Compiler1952x",
                "group_ids": [appliance.group_id],
            }),
        );
        appliance.user_id = user["id"].as_str().expect("user id").to_owned();
        appliance.new_session();
        appliance
    }

    /// A route's path with the fixture's session, user and group in it.
    pub fn path_of(&self, route: &Route) -> String {
        let session = self.session.as_ref().map_or("none", |s| s.id.as_str());
        route
            .path
            .replace("{id}", session)
            .replace("{user_id}", &self.user_id)
            .replace("{group_id}", &self.group_id)
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Sends one request to the router, from `source`.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        source: IpAddr,
    ) -> Answer {
        let https = self.running().https_addr;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", https.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Body::from(body)).expect("a request");
        request.extensions_mut().insert(ConnInfo {
            peer: SocketAddr::new(source, 40_000),
            local: https,
        });
        self.rt.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router answers");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("a body").to_bytes().to_vec();
            Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        })
    }

    /// A request as the console sends it: the admin's cookie and the CSRF header.
    pub fn as_admin(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let headers = [
            ("cookie", self.cookie.as_str()),
            ("x-sightline-csrf", "1"),
            ("content-type", content_type),
        ];
        self.request(method, path, &headers, body, source(0))
    }

    fn admin_json(&self, method: Method, path: &str, body: Value) -> Value {
        let answer = self.as_admin(
            method,
            path,
            "application/json",
            body.to_string().into_bytes(),
        );
        assert!(
            answer.status.is_success(),
            "{path}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()
    }

    /// A request as the customer's page sends it: the invitation and its device secret.
    pub fn as_customer(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let session = self.session.as_ref().expect("a session");
        let bearer = format!("Bearer {}", session.token);
        let headers = [
            ("authorization", bearer.as_str()),
            ("x-sightline-device", session.device.as_str()),
            ("content-type", content_type),
        ];
        self.request(method, path, &headers, body, source(1))
    }

    /// Creates a session, attaches the admin as its technician and a customer who joins
    /// and consents to camera and microphone; ends the previous one.
    pub fn new_session(&mut self) {
        if let Some(old) = self.session.take() {
            let live = &self.running().api().live;
            live.detach(&old.technician.attachment);
            live.detach(&old.customer.attachment);
        }
        let created = self.admin_json(Method::POST, "/api/sessions", json!({}));
        let id = created["session"]["id"]
            .as_str()
            .expect("session id")
            .to_owned();
        let link = created["link"].as_str().expect("link");
        let token = link.split_once("/c#").expect("token").1.to_owned();
        let pin = created["pin"].as_str().expect("pin").to_owned();
        let live = self.running().api().live.clone();
        let session_id: SessionId = serde_json::from_value(json!(id)).expect("session id");
        let (attachment, outbox) = live
            .attach_technician(self.admin.as_ref().expect("admin"), &session_id, source(0))
            .expect("the technician follows the session");
        let technician = Participant { attachment, outbox };
        let (attachment, outbox) = live
            .attach_customer(&token, None, Some("fuzz"), source(1))
            .expect("the customer joins");
        let mut customer = Participant { attachment, outbox };
        let device = customer
            .drain()
            .into_iter()
            .find_map(|m| match m {
                ServerMessage::Device { key } => Some(key),
                _ => None,
            })
            .expect("a device secret");
        self.rt
            .block_on(live.handle(
                &customer.attachment,
                ClientMessage::Consent {
                    camera: true,
                    microphone: true,
                    recording: true,
                },
            ))
            .expect("consent");
        self.session = Some(Session {
            id,
            token,
            pin,
            device,
            technician,
            customer,
        });
    }

    /// Whether the admin is still fully signed in: a fuzzed request may change the
    /// account's policy, the admin's own password or two-factor state.
    pub fn admin_signed_in(&self) -> bool {
        let answer = self.request(
            Method::GET,
            "/api/me",
            &[("cookie", self.cookie.as_str())],
            Vec::new(),
            source(0),
        );
        answer.status == StatusCode::OK && answer.json()["stage"] == "complete"
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = self.rt.block_on(running.shutdown());
        }
    }
}

/// The routes whose requests carry a JSON body, except the ones other targets cover (SDP,
/// images) and the ones that would end what the targets work through (the admin's
/// sign-in, the live session).
pub fn body_routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        sightline::api::routes()
            .into_iter()
            .filter(|r| r.method == Method::POST || r.method == Method::PATCH)
            .filter(|r| {
                !["/whip", "/whep", "/stills/", "/logout", "/end"]
                    .iter()
                    .any(|part| r.path.contains(part))
            })
            .collect()
    })
}

/// Never a server error; every refusal is `{"error": code, "message": …}` with a code the
/// pages can translate.
pub fn check_answer(what: &str, answer: &Answer) {
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        !answer.status.is_server_error(),
        "{what}: {} {text}",
        answer.status
    );
    if answer.status.is_client_error() || answer.status.is_server_error() {
        let body = answer.json();
        let code = body["error"].as_str().unwrap_or_default();
        assert!(
            ERROR_CODES.contains(&code) && body["message"].is_string(),
            "{what}: {} is not a typed error: {text}",
            answer.status
        );
    }
}
