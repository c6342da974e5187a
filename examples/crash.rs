//! Crash program (not a test): starts the real `sightline` binary, writes through the
//! API and the signaling WebSocket, kills the process with SIGKILL — at a random moment,
//! or (every other cycle) right after the first acknowledged write — restarts it and
//! checks that every acknowledged write is still there, with its audit entry.
//!
//! Writers: groups over REST (each with a `group_changed` audit entry), and a support
//! session per cycle whose customer joins, pauses and resumes and sends chat lines (a
//! line is acknowledged when the technician's console receives it).
//!
//! `cargo build --release && cargo run --release --example crash [cycles]` (default 200).
//! Prints the cycles run, the acknowledged writes and the losses (which must be zero).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

struct Started {
    child: Child,
    addr: SocketAddr,
    setup_code: Option<String>,
}

fn start(data_dir: &Path) -> Started {
    let mut child = Command::new(common::built_binary())
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sightline (build it first: cargo build --release)");
    let banner = common::read_banner(child.stdout.take().expect("stdout"));
    Started {
        child,
        addr: banner.https.expect("console address"),
        setup_code: banner.setup_code,
    }
}

async fn group_ids(admin: &mut common::Client) -> HashSet<String> {
    let groups = admin.get("/api/groups").await.json();
    groups
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["id"].as_str().map(str::to_owned))
        .collect()
}

/// On the stopped appliance: whether `sightline audit verify` passes, and the groups
/// whose creation the security log records.
fn audit_offline(data_dir: &Path) -> (bool, HashSet<String>) {
    let run = |args: &[&str]| {
        Command::new(common::built_binary())
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .output()
            .expect("run sightline audit")
    };
    let verified = run(&["audit", "verify"]).status.success();
    let export = run(&["audit", "export"]);
    let created = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "group_changed")
        .filter_map(|e| {
            e["detail"]
                .as_str()
                .and_then(|d| d.strip_prefix("group "))
                .and_then(|d| d.split_once(" created"))
                .map(|(id, _)| id.to_owned())
        })
        .collect();
    (verified, created)
}

/// The chat lines stored with every session.
async fn stored_chat(admin: &mut common::Client, sessions: &[String]) -> HashSet<String> {
    let mut lines = HashSet::new();
    for id in sessions {
        let transcript = admin.get(&format!("/api/sessions/{id}/transcript")).await;
        if let Ok(serde_json::Value::Array(entries)) =
            serde_json::from_slice::<serde_json::Value>(&transcript.body)
        {
            lines.extend(
                entries
                    .iter()
                    .filter_map(|e| e["text"].as_str().map(str::to_owned)),
            );
        }
    }
    lines
}

/// Acknowledged writes missing; forgets them so that each is counted once.
async fn verify(
    admin: &mut common::Client,
    groups: &Mutex<Vec<String>>,
    chat: &Mutex<Vec<String>>,
    sessions: &[String],
) -> usize {
    let present = group_ids(admin).await;
    let lines = stored_chat(admin, sessions).await;
    let mut groups = groups.lock().expect("lock");
    let mut chat = chat.lock().expect("lock");
    let missing = groups.iter().filter(|n| !present.contains(*n)).count()
        + chat.iter().filter(|t| !lines.contains(*t)).count();
    groups.retain(|n| present.contains(n));
    chat.retain(|t| lines.contains(t));
    missing
}

/// Acknowledged groups whose creation has no audit entry, and whether the chain verifies.
fn verify_audit(data_dir: &Path, groups: &Mutex<Vec<String>>) -> (usize, bool) {
    let (verified, created) = audit_offline(data_dir);
    let groups = groups.lock().expect("lock");
    (
        groups.iter().filter(|id| !created.contains(*id)).count(),
        verified,
    )
}

fn client(data_dir: &Path, addr: SocketAddr) -> common::Client {
    let ca = std::fs::read_to_string(data_dir.join("tls/ca.pem")).expect("ca");
    common::Client::for_address(addr, &ca, "127.0.0.1")
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
            &json!({"code": code, "email": "ada@example.com", "password": "Camera4support",
                    "display_name": "Ada", "organisation": "Crash Test"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
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
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let chat_acknowledged: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut sessions: Vec<String> = Vec::new();
    let mut losses = 0usize;
    let mut audit_losses = 0usize;
    let mut chain_breaks = 0usize;
    let started = Instant::now();
    for cycle in 0..cycles {
        let (missing_entries, verified) = verify_audit(&data_dir, &acknowledged);
        audit_losses += missing_entries;
        if !verified {
            chain_breaks += 1;
            eprintln!("cycle {cycle}: sightline audit verify failed");
        }
        let mut running = start(&data_dir);
        let mut admin = client(&data_dir, running.addr);
        let login = admin
            .post_json(
                "/api/login",
                &json!({"email": "ada@example.com", "password": "Camera4support"}),
            )
            .await;
        assert_eq!(login.status, 200, "cycle {cycle}: {}", login.text());

        // Everything acknowledged so far must have survived the last kill.
        let missing = verify(&mut admin, &acknowledged, &chat_acknowledged, &sessions).await;
        if missing > 0 {
            eprintln!("cycle {cycle}: {missing} acknowledged writes missing");
        }
        losses += missing;

        // Write until killed: at a random moment, or right after the first acknowledgement.
        let first_ack = Arc::new(tokio::sync::Notify::new());
        let writer = {
            let acknowledged = acknowledged.clone();
            let first_ack = first_ack.clone();
            let mut admin = admin.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let name = format!("g-{cycle}-{n}");
                    let r = admin
                        .json("POST", "/api/groups", &json!({"name": name}))
                        .await;
                    if r.status == 201
                        && let Some(id) = r.json()["id"].as_str()
                    {
                        acknowledged.lock().expect("lock").push(id.to_owned());
                        first_ack.notify_one();
                    }
                }
            })
        };
        let (session_id, token, _) = common::create_session(&mut admin).await;
        sessions.push(session_id.clone());
        let talker = {
            let chat_acknowledged = chat_acknowledged.clone();
            let admin = admin.clone();
            let customer = client(&data_dir, running.addr);
            tokio::spawn(async move {
                let mut tech = admin.websocket().await;
                common::send(
                    &mut tech,
                    json!({"type": "watch", "session_id": session_id}),
                )
                .await;
                let mut page = customer.websocket().await;
                common::send(&mut page, json!({"type": "join", "token": token})).await;
                common::recv_state(&mut tech, "joined").await;
                for n in 0.. {
                    let paused = n % 2 == 0;
                    common::send(&mut page, json!({"type": "pause", "paused": paused})).await;
                    let text = format!("line-{cycle}-{n}");
                    common::send(&mut page, json!({"type": "chat", "text": text})).await;
                    let line = common::recv_type(&mut tech, "chat").await;
                    if line["line"]["text"] == text.as_str() || line["text"] == text.as_str() {
                        chat_acknowledged.lock().expect("lock").push(text);
                    }
                }
            })
        };
        if cycle % 2 == 0 {
            let delay = rand::thread_rng().gen_range(20..400);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        } else {
            first_ack.notified().await;
        }
        running.child.kill().expect("SIGKILL");
        let _ = running.child.wait();
        writer.abort();
        talker.abort();
        let _ = writer.await;
        let _ = talker.await;
    }
    // Final check after the last kill.
    let (final_entries, verified) = verify_audit(&data_dir, &acknowledged);
    audit_losses += final_entries;
    chain_breaks += usize::from(!verified);
    let mut last = start(&data_dir);
    let mut admin = client(&data_dir, last.addr);
    admin
        .post_json(
            "/api/login",
            &json!({"email": "ada@example.com", "password": "Camera4support"}),
        )
        .await;
    losses += verify(&mut admin, &acknowledged, &chat_acknowledged, &sessions).await;
    let groups_kept = acknowledged.lock().expect("lock").len();
    let lines_kept = chat_acknowledged.lock().expect("lock").len();
    let _ = last.child.kill();
    let _ = last.child.wait();
    println!(
        "crash test: {cycles} SIGKILL cycles in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  acknowledged writes present at the end: {} ({groups_kept} groups, {lines_kept} chat lines with pauses between them)",
        groups_kept + lines_kept
    );
    println!("  acknowledged writes lost: {losses}");
    println!("  audit entries of acknowledged writes lost: {audit_losses}");
    println!("  restarts where `sightline audit verify` failed: {chain_breaks}");
    if losses + audit_losses + chain_breaks > 0 {
        std::process::exit(1);
    }
}
