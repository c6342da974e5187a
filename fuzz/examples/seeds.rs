//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) and the backup
//! fixture (`fuzz/fixtures/backup/`) from a real appliance: request bodies as the console
//! sends them, signaling messages, offers as str0m makes them (the customer's with the
//! page's simulcast layers), ICE-TCP frames, the packaged configuration, and a real
//! backup. Run it when an input format changes and commit what it writes:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::http::Method;
use serde_json::{Value, json};
use sightline::live::ClientMessage;
use sightline::media::fuzzing::binding_request;
use sightline::store::keys::MasterKey;
use sightline_fuzz::{Appliance, body_routes};
use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let keys = tempfile::tempdir().expect("dir");
    let identity = keys.path().join("backup.key");
    MasterKey::generate().write(&identity).expect("identity");
    let identity_text = std::fs::read_to_string(&identity).expect("identity");
    let public = identity_text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key")
        .to_owned();
    let backups = keys.path().join("backups");
    let dir = backups.clone();
    let app = Appliance::start_with(move |c| {
        c.backup.directory = Some(dir);
        c.backup.recipient = Some(public);
    });

    api_json(root, &app);
    signaling(root);
    sdp_offer(root, &app);
    ice_demux(root);
    config(root);
    invitation(root, &app);
    backup_restore(root, &app, &identity, &backups);
}

fn corpus(root: &Path, target: &str) -> PathBuf {
    let dir = root.join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

fn seed(dir: &Path, name: &str, first: u8, rest: &[u8]) {
    let mut bytes = vec![first];
    bytes.extend_from_slice(rest);
    std::fs::write(dir.join(name), bytes).expect("seed");
}

fn api_json(root: &Path, app: &Appliance) {
    let dir = corpus(root, "api_json");
    let account = app
        .as_admin(Method::GET, "/api/account", "application/json", Vec::new())
        .json();
    let policy = account["policy"].clone();
    for (i, route) in body_routes().iter().enumerate() {
        let body: Value = match (route.method.as_str(), route.path) {
            (_, "/api/setup") => json!({"code": "0123456789", "email": "a@example.com",
                "password": "Camera4support", "display_name": "A", "organisation": "O"}),
            (_, "/api/login") => json!({"email": "ada@example.com", "password": "wrong one"}),
            (_, "/api/join/pin") => json!({"pin": "123456"}),
            (_, "/api/login/second-factor" | "/api/me/totp/confirm") => json!({"code": "123456"}),
            (_, "/api/me/password") => json!({"current": "not it", "new": "Tangerine kettle 47"}),
            (_, "/api/sessions") => json!({"customer_reference": "T-1"}),
            (_, "/api/sessions/{id}/colleagues") => {
                json!({"user_id": app.user_id, "role": "observer"})
            }
            ("POST", "/api/users") => json!({"email": "tess@example.com", "display_name": "Tess",
                "role": "technician", "password": "Tangerine kettle 47", "group_ids": [app.group_id]}),
            ("PATCH", "/api/users/{user_id}") => {
                json!({"display_name": "Grace", "role": "technician",
                "active": true, "group_ids": []})
            }
            (_, "/api/users/{user_id}/reset-password") => {
                json!({"password": "Tangerine kettle 48"})
            }
            ("POST", "/api/groups") => {
                json!({"name": "Office", "require_2fa": false, "see_group_history": true})
            }
            ("PATCH", "/api/groups/{group_id}") => json!({"name": "Field 2", "require_2fa": false}),
            ("PATCH", "/api/account") => {
                json!({"policy": policy, "subscription": {"seats": 7, "ends_ms": null}})
            }
            (_, "/api/deletions") => json!({"customer_reference": "T-1"}),
            _ => json!({}),
        };
        let name = format!(
            "{}-{}",
            route.method,
            route.path.replace(['/', '{', '}'], "_")
        );
        seed(&dir, &name, i as u8, body.to_string().as_bytes());
    }
}

fn signaling(root: &Path) {
    let dir = corpus(root, "signaling");
    let technician = [
        json!({"type": "ping"}),
        json!({"type": "chat", "text": "Can you show me the label?"}),
        json!({"type": "draw", "shape": {"kind": "arrow", "color": "#ff0000", "from": [0.1, 0.2], "to": [0.5, 0.5]}}),
        json!({"type": "draw", "shape": {"kind": "pen", "color": "#000000", "points": [[0.1, 0.1], [0.2, 0.25]]}}),
        json!({"type": "draw", "shape": {"kind": "circle", "color": "#00ff00", "from": [0.5, 0.5], "to": [0.6, 0.5]}}),
        json!({"type": "draw", "shape": {"kind": "text", "color": "#0000ff", "at": [0.5, 0.5], "text": "here"}}),
        json!({"type": "undo"}),
        json!({"type": "clear_drawing"}),
        json!({"type": "pointer", "at": [0.3, 0.4]}),
        json!({"type": "pointer", "at": null}),
        json!({"type": "freeze", "frozen": true}),
        json!({"type": "freeze", "frozen": false}),
        json!({"type": "camera", "facing": "environment", "torch": true, "zoom": 2.0}),
        json!({"type": "snapshot"}),
        json!({"type": "record", "on": true}),
        json!({"type": "record", "on": false}),
        json!({"type": "mute", "muted": true}),
        json!({"type": "watch", "session_id": "s"}),
        json!({"type": "end"}),
    ];
    let customer = [
        json!({"type": "consent", "camera": true, "microphone": false, "recording": false}),
        json!({"type": "pause", "paused": true}),
        json!({"type": "chat", "text": "Sure"}),
        json!({"type": "capabilities", "capabilities": {"cameras": 2, "facing": "user",
            "label": "Back camera", "torch": false, "zoom": {"min": 1.0, "max": 4.0, "step": 0.1, "value": 1.0}, "width": 1920}}),
        json!({"type": "mute", "muted": false}),
        json!({"type": "join", "token": "t", "device": "d"}),
    ];
    for (i, message) in technician.iter().enumerate() {
        check_parses(message);
        seed(
            &dir,
            &format!("technician-{i:02}"),
            0,
            message.to_string().as_bytes(),
        );
    }
    for (i, message) in customer.iter().enumerate() {
        check_parses(message);
        seed(
            &dir,
            &format!("customer-{i:02}"),
            1,
            message.to_string().as_bytes(),
        );
    }
}

/// A seed the parser refuses would only teach the fuzzer the error path.
fn check_parses(message: &Value) {
    if let Err(e) = serde_json::from_value::<ClientMessage>(message.clone()) {
        panic!("seed {message} does not parse: {e}");
    }
}

/// A first offer sent to the appliance at `path`, and the ICE-restart offer the page would
/// send once it has the answer.
fn offer(app: &Appliance, path: &str, video: Direction, simulcast: bool) -> (String, String) {
    let mut rtc = str0m::Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    let layers = simulcast.then(|| {
        let mut layers = Simulcast::new();
        for rid in ["l", "h"] {
            layers.add_send_layer(SimulcastLayer::new(rid));
        }
        layers
    });
    api.add_media(MediaKind::Video, video, None, None, layers);
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let first = offer.to_sdp_string();
    let body = first.clone().into_bytes();
    let answer = if path.contains("/whip") {
        app.as_customer(Method::POST, path, "application/sdp", body)
    } else {
        app.as_admin(Method::POST, path, "application/sdp", body)
    };
    assert_eq!(
        answer.status.as_u16(),
        201,
        "{path}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    let answer = str0m::change::SdpAnswer::from_sdp_string(&String::from_utf8_lossy(&answer.body))
        .expect("an answer");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("accepted");
    let mut api = rtc.sdp_api();
    api.ice_restart(true);
    let (restart, _) = api.apply().expect("a restart offer");
    (first, restart.to_sdp_string())
}

fn sdp_offer(root: &Path, app: &Appliance) {
    let dir = corpus(root, "sdp_offer");
    let session = &app.session.as_ref().expect("session").id;
    let whep = format!("/api/sessions/{session}/whep");
    let (plain, _) = offer(app, "/api/invitation/whip", Direction::SendOnly, false);
    let (customer, customer_restart) =
        offer(app, "/api/invitation/whip", Direction::SendOnly, true);
    let (technician, technician_restart) = offer(app, &whep, Direction::RecvOnly, false);
    seed(&dir, "whip-simulcast", 0, customer.as_bytes());
    seed(&dir, "whip-plain", 0, plain.as_bytes());
    seed(&dir, "whep", 1, technician.as_bytes());
    seed(&dir, "whip-restart", 2, customer_restart.as_bytes());
    seed(&dir, "whep-restart", 3, technician_restart.as_bytes());
}

fn framed(frames: &[&[u8]]) -> Vec<u8> {
    let mut stream = Vec::new();
    for frame in frames {
        stream.extend_from_slice(&(frame.len() as u16).to_be_bytes());
        stream.extend_from_slice(frame);
    }
    stream
}

fn ice_demux(root: &Path) {
    let dir = corpus(root, "ice_demux");
    let known = binding_request("relayA1b2:browser1");
    let other = binding_request("relayC3d4:browser2");
    let unknown = binding_request("nobody:browser3");
    // A DTLS ClientHello's record header and an RTP header, as media after the checks.
    let dtls = [
        0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 1, 0, 0, 0,
    ];
    let rtp = [
        0x80, 0x60, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
    ];
    seed(&dir, "stun-then-media", 3, &framed(&[&known, &dtls, &rtp]));
    seed(
        &dir,
        "two-peers",
        7,
        &framed(&[&known, &other, &rtp, &known]),
    );
    seed(&dir, "unknown-ufrag", 1, &framed(&[&unknown, &rtp]));
    seed(
        &dir,
        "tls-client-hello",
        2,
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00],
    );
    seed(&dir, "empty-frame", 5, &[0, 0, 0, 1]);
}

fn config(root: &Path) {
    let dir = corpus(root, "config");
    let packaged = root.join("../packaging/sightline.toml");
    let packaged =
        std::fs::read(&packaged).unwrap_or_else(|e| panic!("{}: {e}", packaged.display()));
    std::fs::write(dir.join("packaged.toml"), packaged).expect("seed");
    let full = r#"data_dir = "/var/lib/sightline"

[store]
cache_mib = 16

[http]
listen = "[::]:443"
public_url = "https://support.example.com"
server_names = ["support.example.com", "10.0.0.5"]

[media]
listen = "0.0.0.0:15000"
public_address = "203.0.113.7"
public_tcp_port = 443
reconnect_grace_secs = 30
workers = 2

[sessions]
invitation_ttl_secs = 3600
max_duration_secs = 14400
guess_limit_per_minute = 10

[retention]
deletion_delay_days = 30
audit_log_days = 365

[backup]
directory = "/srv/backup"
recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
interval_hours = 24

[metrics]
listen = "127.0.0.1:9464"

[firewall]
admin_networks = ["10.0.0.0/8", "fd00::/8"]
ssh_port = 22

[audit]
syslog_udp = "10.0.0.9:514"
"#;
    std::fs::write(dir.join("full.toml"), full).expect("seed");
}

fn invitation(root: &Path, app: &Appliance) {
    let dir = corpus(root, "invitation");
    let session = app.session.as_ref().expect("session");
    // Shapes of the real thing, not the real values (those change with every run).
    let token_shape: String = session
        .token
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { 'A' } else { c })
        .collect();
    for (name, guess) in [
        ("token", token_shape.as_str()),
        ("pin", "123456"),
        ("pin-spaces", " 123 456 "),
        ("empty", ""),
    ] {
        std::fs::write(dir.join(name), guess).expect("seed");
    }
}

fn backup_restore(root: &Path, app: &Appliance, identity: &Path, backups: &Path) {
    let dir = corpus(root, "backup_restore");
    // Something in every kind of record: a chat line in the live session.
    let session = app.session.as_ref().expect("session");
    let live = app.running().api().live.clone();
    app.rt
        .block_on(live.handle(
            &session.technician.attachment,
            ClientMessage::Chat {
                text: "Please show me the meter".into(),
            },
        ))
        .expect("chat");
    let archive = app
        .rt
        .block_on(app.running().backup_now(true))
        .expect("a full backup");
    let identity_text = std::fs::read_to_string(identity).expect("identity");
    let age_identity: age::x25519::Identity = identity_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("identity line")
        .parse()
        .expect("identity");
    let decrypt = |path: &Path| {
        age::decrypt(&age_identity, &std::fs::read(path).expect("read")).expect("decrypt")
    };
    let plain = decrypt(&archive);
    seed(&dir, "full", 0, &plain);
    // Without its end marker: the target adds one with the right digest.
    let text = String::from_utf8(plain).expect("utf-8");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"t\":\"end\""))
        .map(|l| format!("{l}\n"))
        .collect();
    seed(&dir, "lines", 1, body.as_bytes());

    let fixtures = root.join("fixtures/backup");
    std::fs::create_dir_all(&fixtures).expect("fixtures");
    std::fs::write(
        fixtures.join("identity.txt"),
        format!(
            "# For fuzzing only: the identity of the seed backup.
{identity_text}"
        ),
    )
    .expect("identity");
    std::fs::write(
        fixtures.join("vault.json"),
        decrypt(&backups.join("sightline-keys.age")),
    )
    .expect("vault");
}
