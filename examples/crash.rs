//! Crash program (not a test): starts the real `sightline` binary, writes through the
//! API, kills the process with SIGKILL at a random moment, restarts it and checks that
//! every write the API acknowledged is still there.
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

async fn group_names(admin: &mut common::Client) -> HashSet<String> {
    let groups = admin.get("/api/groups").await.json();
    groups
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect()
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
    let mut losses = 0usize;
    let started = Instant::now();
    for cycle in 0..cycles {
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
        let present = group_names(&mut admin).await;
        let missing = acknowledged
            .lock()
            .expect("lock")
            .iter()
            .filter(|name| !present.contains(*name))
            .count();
        if missing > 0 {
            eprintln!("cycle {cycle}: {missing} acknowledged writes missing");
        }
        losses += missing;
        acknowledged
            .lock()
            .expect("lock")
            .retain(|n| present.contains(n));

        // Write until killed at a random moment.
        let writer = {
            let acknowledged = acknowledged.clone();
            let mut admin = admin;
            tokio::spawn(async move {
                for n in 0.. {
                    let name = format!("g-{cycle}-{n}");
                    let r = admin
                        .json("POST", "/api/groups", &json!({"name": name}))
                        .await;
                    if r.status == 201 {
                        acknowledged.lock().expect("lock").push(name);
                    }
                }
            })
        };
        let delay = rand::thread_rng().gen_range(20..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        running.child.kill().expect("SIGKILL");
        let _ = running.child.wait();
        writer.abort();
        let _ = writer.await;
    }
    // Final check after the last kill.
    let mut last = start(&data_dir);
    let mut admin = client(&data_dir, last.addr);
    admin
        .post_json(
            "/api/login",
            &json!({"email": "ada@example.com", "password": "Camera4support"}),
        )
        .await;
    let present = group_names(&mut admin).await;
    let final_missing = acknowledged
        .lock()
        .expect("lock")
        .iter()
        .filter(|n| !present.contains(*n))
        .count();
    losses += final_missing;
    let _ = last.child.kill();
    let _ = last.child.wait();
    let total = present.len();
    println!(
        "crash test: {cycles} SIGKILL cycles in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("  acknowledged writes present at the end: {total}");
    println!("  acknowledged writes lost: {losses}");
    if losses > 0 {
        std::process::exit(1);
    }
}
