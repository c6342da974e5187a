//! Acknowledged-write benchmark (not a test): the real `sightline` binary, a small state
//! change through the API (`POST /api/groups`) answered only once durable, one writer and
//! eight at once; then start-up to ready with `history` ended sessions in the store.
//!
//! `cargo build --release && cargo run --release --example write_latency [history]`
//! (default 10,000). Run the same program against another build to compare engines
//! (`SIGHTLINE_BIN=/path/to/sightline`).

#[path = "../tests/integration/common.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;

fn binary() -> PathBuf {
    std::env::var_os("SIGHTLINE_BIN").map_or_else(common::built_binary, PathBuf::from)
}

fn start(data_dir: &Path) -> (Child, SocketAddr, Option<String>, Duration) {
    let (child, banner, ready) = common::serve_binary(&binary(), data_dir);
    (
        child,
        banner.https.expect("console address"),
        banner.setup_code,
        ready,
    )
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn client(data_dir: &Path, addr: SocketAddr) -> common::Client {
    let ca = std::fs::read_to_string(data_dir.join("tls/ca.pem")).expect("ca");
    common::Client::for_address(addr, &ca, "127.0.0.1")
}

async fn signed_in(data_dir: &Path, addr: SocketAddr) -> common::Client {
    let mut admin = client(data_dir, addr);
    let r = admin
        .post_json(
            "/api/login",
            &json!({"email": "ada@example.com", "password": "Camera4support"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    admin
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |p: f64| ms(times[((times.len() as f64 * p) as usize).min(times.len() - 1)]);
    (at(0.5), at(0.99))
}

#[tokio::main]
async fn main() {
    let history: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let (child, addr, code, _) = start(&data_dir);
    let mut admin = client(&data_dir, addr);
    let r = admin
        .post_json(
            "/api/setup",
            &json!({"code": code.expect("setup code"), "email": "ada@example.com",
                    "password": "Camera4support", "display_name": "Ada", "organisation": "Bench"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let mut times = Vec::new();
    for n in 0..300 {
        let t = Instant::now();
        let r = admin
            .json("POST", "/api/groups", &json!({"name": format!("one-{n}")}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        times.push(t.elapsed());
    }
    let (p50, p99) = percentiles(times);
    println!("one writer:    POST /api/groups p50 {p50:.2} ms, p99 {p99:.2} ms");

    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..8 {
        let data_dir = data_dir.clone();
        writers.push(tokio::spawn(async move {
            let mut c = signed_in(&data_dir, addr).await;
            let mut times = Vec::new();
            for n in 0..50 {
                let t = Instant::now();
                let r = c
                    .json("POST", "/api/groups", &json!({"name": format!("w{w}-{n}")}))
                    .await;
                assert_eq!(r.status, 201, "{}", r.text());
                times.push(t.elapsed());
            }
            times
        }));
    }
    let mut times = Vec::new();
    for w in writers {
        times.extend(w.await.expect("writer"));
    }
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(times);
    println!(
        "eight writers: POST /api/groups p50 {p50:.2} ms, p99 {p99:.2} ms, {rate:.0} acknowledged/s"
    );

    // History: sessions created and ended, as a year of support would leave them.
    let made = Instant::now();
    for _ in 0..history {
        let (id, _, _) = common::create_session(&mut admin).await;
        let r = admin.post_empty(&format!("/api/sessions/{id}/end")).await;
        assert!(r.status < 300, "{}", r.text());
    }
    println!(
        "history:       {history} sessions created and ended in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    stop(child);
    let mut ready = Vec::new();
    for _ in 0..5 {
        let (child, _, _, took) = start(&data_dir);
        ready.push(took);
        stop(child);
    }
    ready.sort();
    println!(
        "start-up:      to ready with that history, median of 5: {:.0} ms (min {:.0}, max {:.0})",
        ms(ready[2]),
        ms(ready[0]),
        ms(ready[4])
    );
}
