//! Store benchmark (not a test): what the embedded engine costs in memory as the history
//! grows, and what an acknowledged write costs in time.
//!
//! `cargo run --release --example store_bench [records]` (default 1,000,000).
//!
//! 1. Writes `records` audit-sized records (flushing every 1,000, as a busy appliance
//!    would) and prints resident memory every 10 % of the way: once the page cache is
//!    full, memory must stay flat however large the file grows.
//! 2. Acknowledged-write latency: one small record written and flushed, one at a time
//!    (p50/p99), against the same done by 16 writers at once, whose flushes share fsyncs
//!    (group commit): throughput of both and the ratio.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline::audit::{AuditEntry, AuditKind};
use sightline::store::Store;
use sightline::store::keys::MasterKey;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn entry(seq: u64) -> AuditEntry {
    AuditEntry {
        seq,
        at_ms: 1_800_000_000_000 + seq * 1000,
        kind: AuditKind::SessionCreated,
        account_id: Some("6f1c0e4b9a2d4e7f8a1b2c3d4e5f6a7b".into()),
        actor: Some("0a1b2c3d4e5f60718293a4b5c6d7e8f9".into()),
        source: Some([198, 18, 0, 7].into()),
        detail: format!("session {seq:032x} created"),
        prev_hash: "ab".repeat(32),
        hash: "cd".repeat(32),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn growth(store: &Store, records: u64) {
    let log = store
        .global::<AuditEntry>("bench_audit")
        .expect("collection");
    println!("records  resident MiB  file MiB");
    let step = (records / 10).max(1);
    let mut at_first_step = 0.0;
    for seq in 0..records {
        log.put(&format!("{seq:016}"), &entry(seq)).expect("put");
        if seq % 1000 == 999 {
            store.flush_blocking().expect("flush");
        }
        if (seq + 1) % step == 0 {
            let rss = rss_mib();
            if seq + 1 == step {
                at_first_step = rss;
            }
            println!(
                "{:>7}  {rss:>12.1}  {:>8.1}",
                seq + 1,
                store.size_on_disk() as f64 / (1 << 20) as f64
            );
        }
    }
    store.flush_blocking().expect("flush");
    let end = rss_mib();
    println!(
        "resident memory from {step} to {records} records: {at_first_step:.1} -> {end:.1} MiB ({:+.1} %)",
        (end / at_first_step - 1.0) * 100.0
    );
}

async fn latency(store: &Store) {
    let c = store.global::<AuditEntry>("bench_ack").expect("collection");
    let serial_writes = 500u64;
    let mut times = Vec::new();
    let started = Instant::now();
    for seq in 0..serial_writes {
        let t = Instant::now();
        c.put(&format!("s{seq}"), &entry(seq)).expect("put");
        store.flush().await.expect("flush");
        times.push(t.elapsed());
    }
    let serial_rate = serial_writes as f64 / started.elapsed().as_secs_f64();
    times.sort();
    println!(
        "one writer:  put + durable flush p50 {:.2} ms, p99 {:.2} ms, {serial_rate:.0} acknowledged writes/s",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );

    let writers = 16u64;
    let per_writer = 100u64;
    let c = Arc::new(c);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for seq in 0..per_writer {
                let t = Instant::now();
                let c2 = c.clone();
                tokio::task::spawn_blocking(move || {
                    c2.put(&format!("g{w}-{seq}"), &entry(seq)).expect("put")
                })
                .await
                .expect("join");
                store.flush().await.expect("flush");
                times.push(t.elapsed());
            }
            times
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.expect("writer"));
    }
    let group_rate = (writers * per_writer) as f64 / started.elapsed().as_secs_f64();
    times.sort();
    println!(
        "{writers} writers: put + durable flush p50 {:.2} ms, p99 {:.2} ms, {group_rate:.0} acknowledged writes/s ({:.1}x one writer: flushes shared)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        group_rate / serial_rate,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Path::new(dir.path()), MasterKey::generate()).expect("store");
    latency(&store).await;
    growth(&store, records);
}
