//! Benchmark (not a test): how much a login flood slows a cheap authenticated API call.
//!
//! Starts the appliance in-process, signs in an admin, then measures the latency of
//! `GET /api/me` over a kept-alive connection for a while without load (baseline) and
//! while other tasks send 50 wrong-password logins per second. Prints p50/p99 of both
//! and the ratio. Run with `cargo run --release --example login_flood [seconds]`.

#[path = "../tests/integration/common.rs"]
mod common;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

const FLOOD_PER_SECOND: u64 = 50;

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let app = common::TestAppliance::start().await;
    let admin = app.set_up().await;
    let cookie = admin.cookie.clone().expect("signed in");

    let baseline = measure(&admin, &cookie, Duration::from_secs(seconds)).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flooders = Vec::new();
    let interval = Duration::from_micros(1_000_000 / FLOOD_PER_SECOND);
    {
        let stop = stop.clone();
        let sent = sent.clone();
        let app_addr = app.addr();
        let ca = app.running().ca_pem.clone();
        flooders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let sent = sent.clone();
                let ca = ca.clone();
                // Distinct emails and sources, so lockout and throttling do not cut the
                // flood short: every attempt costs a full argon2 verification.
                tokio::spawn(async move {
                    let mut client = common::Client::for_address(
                        app_addr,
                        &ca,
                        &format!("127.0.{}.{}", (n / 250) % 250 + 1, n % 250 + 1),
                    );
                    let body = serde_json::json!({"email": format!("flood{n}@example.com"), "password": "Wrong4password"});
                    client.post_json("/api/login", &body).await;
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        }));
    }
    let flooded = measure(&admin, &cookie, Duration::from_secs(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        let _ = f.await;
    }
    let logins = sent.load(std::sync::atomic::Ordering::Relaxed);

    println!(
        "login flood benchmark ({seconds} s per phase, {} cores)",
        cores()
    );
    println!(
        "  baseline   GET /api/me: p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests)",
        baseline.p50, baseline.p99, baseline.count
    );
    println!(
        "  with flood GET /api/me: p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests)",
        flooded.p50, flooded.p99, flooded.count
    );
    println!(
        "  flood: {logins} failed logins answered ({:.1}/s offered {FLOOD_PER_SECOND}/s)",
        logins as f64 / seconds as f64
    );
    println!(
        "  p99 ratio flood/baseline: {:.2}",
        flooded.p99 / baseline.p99
    );
}

struct Latencies {
    p50: f64,
    p99: f64,
    count: usize,
}

/// Sends `GET /api/me` back to back over one kept-alive connection, 20 per second.
async fn measure(client: &common::Client, cookie: &str, duration: Duration) -> Latencies {
    let stream = client.connect().await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut samples = Vec::new();
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < end {
        tick.tick().await;
        let request = hyper::Request::get("/api/me")
            .header("host", "127.0.0.1")
            .header("cookie", cookie)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let started = Instant::now();
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Latencies {
        p50: at(0.50),
        p99: at(0.99),
        count: samples.len(),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
