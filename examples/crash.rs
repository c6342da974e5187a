//! Crash program (not a test): starts the real `sightline` binary, writes every kind of
//! record through the API, the signaling WebSocket and the operator's CLI, kills the
//! process with SIGKILL — at a random moment, or (every other cycle) right after the
//! first acknowledged write — restarts it and checks that every acknowledged write is
//! still there, with its audit entry, and that `sightline audit verify` passes.
//!
//! What is written, and what "acknowledged" means for it:
//! - groups (201), users (201), account settings (200), each with its audit entry;
//! - a support session per cycle (201): the customer joins, consents (the console sees
//!   "consented"), pauses and resumes and sends chat lines (the console receives the
//!   line), and uploads a snapshot the technician asked for (201);
//! - a TOTP sign-in (200; afterwards the same code must be refused: no replay), a
//!   sign-out (204; afterwards that cookie must be refused), and a lockout ended by the
//!   admin's unlock (204; afterwards the user signs in);
//! - an account created offline with `sightline admin account create` between cycles
//!   (exit 0; afterwards its admin signs in with the temporary password).
//!
//! `cargo build --release && cargo run --release --example crash [cycles]` (default 200).
//! Prints the cycles run, the acknowledged writes per kind and the losses (which must be
//! zero); exits non-zero on any loss.

#[path = "../tests/integration/common.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("ada@example.com", "Camera4support");
const TOTP_USER: &str = "totp@example.com";
const LOCKY: &str = "locky@example.com";
const NEW_PASSWORD: &str = "Orchid lantern 93 quay";

struct Started {
    child: Child,
    addr: SocketAddr,
    setup_code: Option<String>,
}

fn start(data_dir: &Path) -> Started {
    let (child, banner, _) = common::serve_binary(&common::built_binary(), data_dir);
    Started {
        child,
        addr: banner.https.expect("console address"),
        setup_code: banner.setup_code,
    }
}

fn client(data_dir: &Path, addr: SocketAddr) -> common::Client {
    client_from(data_dir, addr, "127.0.0.1")
}

/// Wrong passwords come from their own address, so that the appliance's per-source
/// throttle (rightly) slows them and nothing else.
fn client_from(data_dir: &Path, addr: SocketAddr, source: &str) -> common::Client {
    let ca = std::fs::read_to_string(data_dir.join("tls/ca.pem")).expect("ca");
    common::Client::for_address(addr, &ca, source)
}

async fn sign_in(client: &mut common::Client, email: &str, password: &str) -> common::Response {
    client
        .post_json("/api/login", &json!({"email": email, "password": password}))
        .await
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything the appliance acknowledged, by kind, and what it said last where a later
/// write replaces an earlier one.
#[derive(Default)]
struct Ledger {
    groups: Vec<String>,
    users: Vec<String>,
    /// The idle timeout last acknowledged, and those sent after it (not yet answered).
    setting: Option<u64>,
    setting_pending: Vec<u64>,
    /// (session, line) the console received.
    chat: Vec<(String, String)>,
    /// Sessions whose customer's consent the console saw.
    consented: Vec<String>,
    /// (session, still) uploads answered 201.
    stills: Vec<(String, String)>,
    /// The last TOTP code accepted: it must never be accepted again.
    totp_used: Option<String>,
    signed_out: Vec<String>,
    /// Whether the last acknowledged event of the lockout user was an unlock.
    unlocked: Option<bool>,
    accounts: Vec<(String, String)>,
}

#[derive(Default)]
struct Losses {
    by_kind: BTreeMap<&'static str, usize>,
}

impl Losses {
    fn add(&mut self, kind: &'static str, n: usize) {
        if n > 0 {
            *self.by_kind.entry(kind).or_default() += n;
        }
    }

    fn total(&self) -> usize {
        self.by_kind.values().sum()
    }
}

/// The identity test users: one with TOTP, one to lock out. Returns the lockout user's
/// id and the TOTP secret.
async fn prepare_users(
    admin: &mut common::Client,
    data_dir: &Path,
    addr: SocketAddr,
) -> (String, String) {
    let mut secret = String::new();
    let mut locky_id = String::new();
    for email in [TOTP_USER, LOCKY] {
        let id = common::create_technician(admin, email, Vec::new()).await;
        let mut user = client(data_dir, addr);
        let r = sign_in(&mut user, email, common::TECH_PASSWORD).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = user
            .json(
                "POST",
                "/api/me/password",
                &json!({"current": common::TECH_PASSWORD, "new": NEW_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        if email == TOTP_USER {
            secret = user.json("POST", "/api/me/totp", &json!({})).await.json()["secret"]
                .as_str()
                .expect("secret")
                .to_owned();
            let code = common::totp_code(&secret, unix_secs());
            let r = user
                .json("POST", "/api/me/totp/confirm", &json!({"code": code}))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        } else {
            locky_id = id;
        }
    }
    (locky_id, secret)
}

/// Checks the ledger against the restarted appliance; forgets what is missing so that
/// each loss is counted once. Session content is checked for `sessions` only (the recent
/// ones after each kill, every one at the end), which keeps a long run linear.
async fn verify(
    data_dir: &Path,
    addr: SocketAddr,
    admin: &mut common::Client,
    ledger: &Mutex<Ledger>,
    sessions: &[String],
    losses: &mut Losses,
) {
    let checked: HashSet<&String> = sessions.iter().collect();
    let groups: HashSet<String> = ids(&admin.get("/api/groups").await.json());
    let users: HashSet<String> = ids(&admin.get("/api/users").await.json());
    let policy = admin.get("/api/account").await.json()["policy"].clone();
    let mut chat: HashSet<(String, String)> = HashSet::new();
    let mut consented = HashSet::new();
    let mut stills = HashSet::new();
    for id in sessions {
        let session = admin
            .get(&format!("/api/sessions/{id}/record"))
            .await
            .json();
        if session["consent"]["camera"] == true {
            consented.insert(id.clone());
        }
        for still in session["stills"].as_array().into_iter().flatten() {
            if let Some(s) = still["id"].as_str() {
                stills.insert((id.clone(), s.to_owned()));
            }
        }
        let transcript = admin.get(&format!("/api/sessions/{id}/transcript")).await;
        if let Ok(Value::Array(lines)) = serde_json::from_slice::<Value>(&transcript.body) {
            chat.extend(
                lines
                    .iter()
                    .filter_map(|l| l["text"].as_str().map(|t| (id.clone(), t.to_owned()))),
            );
        }
    }
    let (totp_used, signed_out, unlocked, accounts) = {
        let mut l = ledger.lock().expect("ledger");
        losses.add("groups", count_missing(&mut l.groups, &groups));
        losses.add("users", count_missing(&mut l.users, &users));
        let before = l.chat.len();
        l.chat
            .retain(|c| !checked.contains(&c.0) || chat.contains(c));
        losses.add("chat lines", before - l.chat.len());
        let before = l.consented.len();
        l.consented
            .retain(|id| !checked.contains(id) || consented.contains(id));
        losses.add("consents", before - l.consented.len());
        let before = l.stills.len();
        l.stills
            .retain(|s| !checked.contains(&s.0) || stills.contains(s));
        losses.add("stills", before - l.stills.len());
        if let Some(acked) = l.setting {
            let now = policy["idle_timeout_mins"].as_u64().unwrap_or(0);
            if now != acked && !l.setting_pending.contains(&now) {
                losses.add("settings", 1);
            }
            l.setting = Some(now);
        }
        l.setting_pending.clear();
        (
            l.totp_used.take(),
            std::mem::take(&mut l.signed_out),
            l.unlocked.take(),
            std::mem::take(&mut l.accounts),
        )
    };
    let mut probe = client(data_dir, addr);
    if let Some(code) = totp_used {
        let r = sign_in(&mut probe, TOTP_USER, NEW_PASSWORD).await;
        if r.status == 200 {
            let replay = probe
                .json("POST", "/api/login/second-factor", &json!({"code": code}))
                .await;
            losses.add(
                "TOTP codes accepted twice",
                usize::from(replay.status == 200),
            );
        }
    }
    for cookie in signed_out {
        let mut old = client(data_dir, addr);
        old.cookie = Some(cookie);
        losses.add(
            "sign-outs",
            usize::from(old.get("/api/me").await.status == 200),
        );
    }
    if unlocked == Some(true) {
        let r = sign_in(&mut client(data_dir, addr), LOCKY, NEW_PASSWORD).await;
        losses.add("unlocks", usize::from(r.status != 200));
    }
    for (email, password) in accounts {
        let r = sign_in(&mut client(data_dir, addr), &email, &password).await;
        losses.add("accounts", usize::from(r.status != 200));
    }
}

fn ids(list: &Value) -> HashSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

fn count_missing(acked: &mut Vec<String>, present: &HashSet<String>) -> usize {
    let before = acked.len();
    acked.retain(|x| present.contains(x));
    before - acked.len()
}

/// On the stopped appliance: acknowledged groups without their creation entry, and
/// whether `sightline audit verify` passes.
fn verify_audit(data_dir: &Path, ledger: &Mutex<Ledger>) -> (usize, bool) {
    let run = |args: &[&str]| common::sightline_at(data_dir, args);
    let verified = run(&["audit", "verify"]).status.success();
    let export = run(&["audit", "export"]);
    let entries: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let detail_of = |kind: &str, prefix: &str| -> HashSet<String> {
        entries
            .iter()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| e["detail"].as_str()?.strip_prefix(prefix))
            .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    // "group ID created (…)" and "user ID as …"
    let groups = detail_of("group_changed", "group ");
    let users = detail_of("user_created", "user ");
    let l = ledger.lock().expect("ledger");
    let missing = l.groups.iter().filter(|id| !groups.contains(*id)).count()
        + l.users.iter().filter(|id| !users.contains(*id)).count();
    (missing, verified)
}

/// Groups, users and settings until the task is ended.
async fn rest_writer(
    mut admin: common::Client,
    cycle: usize,
    ledger: Arc<Mutex<Ledger>>,
    first: Arc<tokio::sync::Notify>,
) {
    for n in 0.. {
        let r = admin
            .json(
                "POST",
                "/api/groups",
                &json!({"name": format!("g-{cycle}-{n}")}),
            )
            .await;
        if r.status == 201
            && let Some(id) = r.json()["id"].as_str()
        {
            ledger.lock().expect("ledger").groups.push(id.to_owned());
            first.notify_one();
        }
        let r = admin
            .json(
                "POST",
                "/api/users",
                &json!({"email": format!("u-{cycle}-{n}@example.com"), "display_name": "U",
                        "role": "technician", "password": common::TECH_PASSWORD}),
            )
            .await;
        if r.status == 201
            && let Some(id) = r.json()["id"].as_str()
        {
            ledger.lock().expect("ledger").users.push(id.to_owned());
        }
        let minutes = 10 + (cycle as u64 * 7 + n) % 100;
        ledger.lock().expect("ledger").setting_pending.push(minutes);
        let mut policy = admin.get("/api/account").await.json()["policy"].clone();
        policy["idle_timeout_mins"] = json!(minutes);
        let r = admin
            .json("PATCH", "/api/account", &json!({"policy": policy}))
            .await;
        if r.status == 200 {
            let mut l = ledger.lock().expect("ledger");
            l.setting = Some(minutes);
            l.setting_pending.clear();
        }
    }
}

/// A support session: join, consent, a snapshot, then pauses and chat until ended.
async fn session_writer(
    admin: common::Client,
    customer: common::Client,
    session_id: String,
    token: String,
    cycle: usize,
    ledger: Arc<Mutex<Ledger>>,
) {
    let session = session_id.clone();
    let mut tech = admin.websocket().await;
    common::send(
        &mut tech,
        json!({"type": "watch", "session_id": session_id}),
    )
    .await;
    let mut page = customer.websocket().await;
    let joined = common::join(&mut page, &token, None).await;
    let keys = common::CustomerKeys::new(&token, joined["key"].as_str().unwrap_or_default());
    common::recv_state(&mut tech, "joined").await;
    common::send(
        &mut page,
        json!({"type": "consent", "camera": true, "microphone": false}),
    )
    .await;
    common::recv_state(&mut tech, "consented").await;
    ledger
        .lock()
        .expect("ledger")
        .consented
        .push(session_id.clone());
    common::send(&mut tech, json!({"type": "snapshot"})).await;
    let request = common::recv_type(&mut page, "capture").await["request"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut uploader = customer.clone();
    let r = uploader
        .request(
            "POST",
            &format!("/api/invitation/stills/{request}"),
            &keys.headers(&[("content-type", "image/png")]),
            common::png(320, 240),
        )
        .await;
    if r.status == 201
        && let Some(id) = r.json()["id"].as_str()
    {
        ledger
            .lock()
            .expect("ledger")
            .stills
            .push((session_id.clone(), id.to_owned()));
    }
    for n in 0.. {
        common::send(&mut page, json!({"type": "pause", "paused": n % 2 == 0})).await;
        let text = format!("line-{cycle}-{n}");
        common::send(&mut page, json!({"type": "chat", "text": text})).await;
        let line = common::recv_type(&mut tech, "chat").await;
        if line["line"]["text"] == text.as_str() {
            ledger
                .lock()
                .expect("ledger")
                .chat
                .push((session.clone(), text));
        }
    }
}

/// TOTP sign-ins, sign-outs, lockouts and unlocks until ended.
async fn sign_in_writer(
    data_dir: std::path::PathBuf,
    addr: SocketAddr,
    mut admin: common::Client,
    secret: String,
    locky_id: String,
    ledger: Arc<Mutex<Ledger>>,
) {
    loop {
        let mut user = client(&data_dir, addr);
        let r = sign_in(&mut user, TOTP_USER, NEW_PASSWORD).await;
        if r.status == 200 {
            let code = common::totp_code(&secret, unix_secs());
            let r = user
                .json("POST", "/api/login/second-factor", &json!({"code": code}))
                .await;
            if r.status == 200 {
                ledger.lock().expect("ledger").totp_used = Some(code);
                let cookie = user.cookie.clone();
                let out = user.post_empty("/api/logout").await;
                if out.status == 204
                    && let Some(cookie) = cookie
                {
                    ledger.lock().expect("ledger").signed_out.push(cookie);
                }
            }
        }
        // A plain sign-in and sign-out (the TOTP user's succeed once per 30 s step).
        let mut plain = client(&data_dir, addr);
        if sign_in(&mut plain, ADMIN.0, ADMIN.1).await.status == 200 {
            let cookie = plain.cookie.clone();
            if plain.post_empty("/api/logout").await.status == 204
                && let Some(cookie) = cookie
            {
                ledger.lock().expect("ledger").signed_out.push(cookie);
            }
        }
        for i in 0..5 {
            let mut guesser = client_from(&data_dir, addr, "127.0.0.3");
            let r = sign_in(&mut guesser, LOCKY, &format!("Wrong guess {i}x")).await;
            if r.status == 423 {
                ledger.lock().expect("ledger").unlocked = Some(false);
            }
        }
        let r = admin
            .json("POST", &format!("/api/users/{locky_id}/unlock"), &json!({}))
            .await;
        if r.status == 204 {
            ledger.lock().expect("ledger").unlocked = Some(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let cycles: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");

    let mut first = start(&data_dir);
    let mut admin = client(&data_dir, first.addr);
    let code = first.setup_code.clone().expect("setup code on first start");
    let r = admin
        .post_json(
            "/api/setup",
            &json!({"code": code, "email": ADMIN.0, "password": ADMIN.1,
                    "display_name": "Ada", "organisation": "Crash Test"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Enough seats for every user the writers create.
    let r = admin
        .json(
            "PATCH",
            "/api/account",
            &json!({"subscription": {"seats": 1_000_000, "ends_ms": null}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (locky_id, secret) = prepare_users(&mut admin, &data_dir, first.addr).await;
    first.child.kill().expect("kill");
    let _ = first.child.wait();

    // Writers die mid-request when the appliance is killed; only the main thread's
    // panics are real failures worth printing.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("main") {
            default_hook(info);
        }
    }));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut sessions: Vec<String> = Vec::new();
    let mut losses = Losses::default();
    let mut chain_breaks = 0usize;
    let mut acknowledged: BTreeMap<&'static str, usize> = BTreeMap::new();
    let started = Instant::now();
    for cycle in 0..=cycles {
        let (missing_entries, verified) = verify_audit(&data_dir, &ledger);
        losses.add("audit entries", missing_entries);
        if !verified {
            chain_breaks += 1;
            eprintln!("cycle {cycle}: sightline audit verify failed");
        }
        // An account made offline, between two runs.
        if cycle % 10 == 0 {
            let email = format!("admin-{cycle}@offline.example");
            let (_, password) = common::create_account_offline(&data_dir, "Offline", &email);
            ledger
                .lock()
                .expect("ledger")
                .accounts
                .push((email, password));
            *acknowledged.entry("accounts").or_default() += 1;
        }
        let mut running = start(&data_dir);
        let mut admin = client(&data_dir, running.addr);
        let login = sign_in(&mut admin, ADMIN.0, ADMIN.1).await;
        assert_eq!(login.status, 200, "cycle {cycle}: {}", login.text());
        let before = losses.total();
        // The last cycles' sessions were written until a kill; at the end, all of them.
        let recent = if cycle == cycles {
            &sessions[..]
        } else {
            &sessions[sessions.len().saturating_sub(3)..]
        };
        verify(
            &data_dir,
            running.addr,
            &mut admin,
            &ledger,
            recent,
            &mut losses,
        )
        .await;
        if cycle % 100 == 0 {
            eprintln!("cycle {cycle}: {:.0} s", started.elapsed().as_secs_f64());
        }
        if losses.total() > before {
            eprintln!("cycle {cycle}: losses so far {:?}", losses.by_kind);
        }
        if cycle == cycles {
            let _ = running.child.kill();
            let _ = running.child.wait();
            break;
        }
        {
            let l = ledger.lock().expect("ledger");
            for (kind, n) in [
                ("groups", l.groups.len()),
                ("users", l.users.len()),
                ("chat lines", l.chat.len()),
                ("consents", l.consented.len()),
                ("stills", l.stills.len()),
            ] {
                let seen = acknowledged.entry(kind).or_default();
                *seen = (*seen).max(n);
            }
        }

        let first_ack = Arc::new(tokio::sync::Notify::new());
        let (session_id, token, _) = common::create_session(&mut admin).await;
        sessions.push(session_id.clone());
        let tasks = [
            tokio::spawn(rest_writer(
                admin.clone(),
                cycle,
                ledger.clone(),
                first_ack.clone(),
            )),
            tokio::spawn(session_writer(
                admin.clone(),
                client(&data_dir, running.addr),
                session_id,
                token,
                cycle,
                ledger.clone(),
            )),
            tokio::spawn(sign_in_writer(
                data_dir.clone(),
                running.addr,
                admin.clone(),
                secret.clone(),
                locky_id.clone(),
                ledger.clone(),
            )),
        ];
        if cycle % 2 == 0 {
            let delay = rand::thread_rng().gen_range(50..600);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        } else {
            first_ack.notified().await;
        }
        running.child.kill().expect("SIGKILL");
        let _ = running.child.wait();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        let l = ledger.lock().expect("ledger");
        for (kind, happened) in [
            ("TOTP sign-ins", l.totp_used.is_some()),
            ("sign-outs", !l.signed_out.is_empty()),
            ("unlocks", l.unlocked == Some(true)),
        ] {
            *acknowledged.entry(kind).or_default() += usize::from(happened);
        }
        let setting = usize::from(l.setting.is_some());
        *acknowledged.entry("settings (last value)").or_default() = setting;
    }
    println!(
        "crash test: {cycles} SIGKILL cycles in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("  acknowledged and checked after a kill: {acknowledged:?}");
    println!(
        "  acknowledged writes lost: {} {:?}",
        losses.total(),
        losses.by_kind
    );
    println!("  restarts where `sightline audit verify` failed: {chain_breaks}");
    if losses.total() + chain_breaks > 0 {
        std::process::exit(1);
    }
}
