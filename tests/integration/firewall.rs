//! The rendered nftables ruleset, loaded in a private network namespace: three test
//! hosts (the appliance, an admin workstation, an outside client) joined by veth pairs
//! with addresses from 198.18.0.0/15 and no default route. Everything is removed again.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_SCRIPT: &str = r#"
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"hi"); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(data, peer)
for p in (8443, 22, 9999):
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
threading.Thread(target=udp, args=(15000,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"#;

const PROBE_SCRIPT: &str = r#"
import socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "tcp":
        s = socket.create_connection((host, port), timeout=1.0)
        ok = s.recv(2) == b"hi"
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
        s.sendto(b"ping", (host, port)); ok = s.recvfrom(16)[0] == b"ping"
except OSError:
    ok = False
sys.exit(0 if ok else 1)
"#;

struct Namespaces {
    names: Vec<String>,
    listener: Option<Child>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if let Some(mut child) = self.listener.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The elements of one of the appliance's nftables sets inside a namespace.
fn list_set(ns: &str, set: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "set",
            "inet",
            "sightline",
            set,
        ])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn must(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `ns` reaches the appliance on either of its addresses.
fn reachable(ns: &str, probe: &Path, kind: &str, port: u16) -> bool {
    let probe = probe.to_str().expect("utf8");
    let port = port.to_string();
    ["198.18.1.1", "198.18.2.1"].iter().any(|host| {
        run(&[
            "ip", "netns", "exec", ns, "python3", probe, kind, host, &port,
        ])
    })
}

#[test]
#[ignore = "needs network namespaces (root, iproute2): scripts/test-all.sh includes it where they work"]
fn the_rendered_firewall_opens_https_and_media_ssh_for_admins_and_blocks_listed_sources() {
    let id = std::process::id();
    let server = format!("sl-srv-{id}");
    let admin = format!("sl-adm-{id}");
    let outside = format!("sl-out-{id}");
    if !run(&["ip", "netns", "add", &server]) {
        panic!("network namespaces cannot be created here (needs root and iproute2)");
    }
    let mut guard = Namespaces {
        names: vec![server.clone()],
        listener: None,
    };
    for ns in [&admin, &outside] {
        must(&["ip", "netns", "add", ns]);
        guard.names.push(ns.to_string());
    }
    must(&[
        "ip", "link", "add", "sla0", "netns", &server, "type", "veth", "peer", "name", "sla1",
        "netns", &admin,
    ]);
    must(&[
        "ip", "link", "add", "slo0", "netns", &server, "type", "veth", "peer", "name", "slo1",
        "netns", &outside,
    ]);
    for (ns, dev, addr) in [
        (&server, "sla0", "198.18.1.1/24"),
        (&admin, "sla1", "198.18.1.2/24"),
        (&server, "slo0", "198.18.2.1/24"),
        (&outside, "slo1", "198.18.2.2/24"),
    ] {
        must(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("sightline.toml");
    std::fs::write(
        &config,
        "[http]\nlisten = \"0.0.0.0:8443\"\n[media]\nlisten = \"0.0.0.0:15000\"\n\
         [firewall]\nadmin_networks = [\"198.18.1.0/24\"]\n",
    )
    .expect("config");
    let probe = dir.path().join("probe.py");
    std::fs::write(&probe, PROBE_SCRIPT).expect("probe");
    let listener_script = dir.path().join("listen.py");
    std::fs::write(&listener_script, SERVER_SCRIPT).expect("listener");

    let sightline = env!("CARGO_BIN_EXE_sightline");
    must(&[
        "ip",
        "netns",
        "exec",
        &server,
        sightline,
        "--config",
        config.to_str().expect("utf8"),
        "firewall",
        "apply",
    ]);
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &server, "python3"])
        .arg(&listener_script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("listener");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("listening");
    guard.listener = Some(listener);

    // From outside: HTTPS and media only.
    assert!(
        reachable(&outside, &probe, "tcp", 8443),
        "https from outside"
    );
    assert!(
        reachable(&outside, &probe, "udp", 15000),
        "media from outside"
    );
    assert!(
        !reachable(&outside, &probe, "tcp", 22),
        "ssh from outside must be closed"
    );
    assert!(
        !reachable(&outside, &probe, "tcp", 9999),
        "other ports closed"
    );
    // From the admin network: ssh too, other ports still closed.
    assert!(
        reachable(&admin, &probe, "tcp", 22),
        "ssh from the admin network"
    );
    assert!(
        !reachable(&admin, &probe, "tcp", 9999),
        "other ports closed for admins"
    );

    // A blocklisted source is dropped until its element times out.
    must(&[
        "ip",
        "netns",
        "exec",
        &server,
        "nft",
        "add",
        "element",
        "inet",
        "sightline",
        "blocklist_v4",
        "{ 198.18.2.2 timeout 3s }",
    ]);
    assert!(
        !reachable(&outside, &probe, "tcp", 8443),
        "blocklisted source dropped"
    );
    assert!(reachable(&admin, &probe, "tcp", 8443), "others unaffected");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = false;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if reachable(&outside, &probe, "tcp", 8443) {
            back = true;
            break;
        }
    }
    assert!(back, "the blocklist element timed out");
}

/// The appliance (in this process) flags PIN guessing and a malformed-datagram burst; the
/// privileged helper, running inside a test namespace, puts both sources into that
/// namespace's blocklist, while other callers keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs network namespaces (root, iproute2): scripts/test-all.sh includes it where they work"]
async fn guessing_and_malformed_media_bursts_raise_alerts_and_blocklist_the_source() {
    let ns = format!("sl-fw-{}", std::process::id());
    if !run(&["ip", "netns", "add", &ns]) {
        panic!("network namespaces cannot be created here (needs root and iproute2)");
    }
    let mut guard = Namespaces {
        names: vec![ns.clone()],
        listener: None,
    };
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("firewall.sock");
    let config = dir.path().join("sightline.toml");
    std::fs::write(&config, "").expect("config");
    let mut helper = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            env!("CARGO_BIN_EXE_sightline"),
            "--config",
        ])
        .arg(&config)
        .args(["firewall", "helper", "--socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("helper");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(helper.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("helper started");
    assert!(line.contains("listening"), "{line}");
    guard.listener = Some(helper);

    let helper_socket = socket.clone();
    let app = crate::common::TestAppliance::start_with(move |c| {
        c.firewall.helper_socket = Some(helper_socket);
        c.firewall.block_secs = 600;
        c.firewall.malformed_datagrams_per_minute = 50;
    })
    .await;
    let mut admin = app.set_up().await;
    crate::common::create_session(&mut admin).await;

    // Ten wrong PINs from one source.
    let mut guesser = app.client_from("127.0.0.9");
    for _ in 0..10 {
        guesser
            .post_json("/api/join/pin", &serde_json::json!({"pin": "000000"}))
            .await;
    }
    // Failed sign-ins for many different emails from a third source.
    let mut sprayer = app.client_from("127.0.0.11");
    for i in 0..sightline::auth::LOGIN_FAILURES_PER_SOURCE {
        sprayer
            .post_json(
                "/api/login",
                &serde_json::json!({"email": format!("user{i}@example.com"), "password": "Wrong4pass"}),
            )
            .await;
    }
    // A burst of junk datagrams from another source at the media port.
    let junk = std::net::UdpSocket::bind("127.0.0.10:0").expect("udp");
    for i in 0..60u8 {
        junk.send_to(&[0xff, i, 0, 0], app.running().media_addr)
            .expect("send");
    }
    // Meanwhile a legitimate caller is still served.
    assert_eq!(admin.get("/api/sessions").await.status, 200);

    let blocklist = || list_set(&ns, "blocklist_v4");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut listed = blocklist();
    while !(listed.contains("127.0.0.9") && listed.contains("127.0.0.10"))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed = blocklist();
    }
    assert!(
        listed.contains("127.0.0.9"),
        "PIN guesser blocklisted: {listed}"
    );
    assert!(
        listed.contains("127.0.0.10"),
        "junk sender blocklisted: {listed}"
    );
    assert!(
        listed.contains("expires"),
        "elements carry a timeout: {listed}"
    );

    // The metrics report the blocklist's size, asked from the helper.
    let metrics = crate::common::metrics_text(app.running().metrics_addr.expect("metrics")).await;
    assert!(metrics.contains("sightline_blocklist_size 3"), "{metrics}");

    // The helper marks media peers (the appliance asks when a peer connects).
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("helper socket");
    std::io::Write::write_all(&mut stream, b"allow-media 127.0.0.20 60\nflush ruleset\n")
        .expect("write");
    let mut replies = String::new();
    let mut reader = std::io::BufReader::new(&stream);
    std::io::BufRead::read_line(&mut reader, &mut replies).expect("reply");
    std::io::BufRead::read_line(&mut reader, &mut replies).expect("reply");
    assert!(replies.starts_with("ok\nerror"), "{replies}");
    assert!(list_set(&ns, "media_peers_v4").contains("127.0.0.20"));
    assert!(
        blocklist().contains("127.0.0.9"),
        "the helper refused arbitrary commands"
    );

    let alerts: Vec<_> = app
        .running()
        .audit_entries()
        .expect("audit")
        .into_iter()
        .filter(|e| serde_json::to_value(&e.kind).expect("kind") == "anomaly_alert")
        .collect();
    assert!(
        alerts
            .iter()
            .any(|a| a.source == Some("127.0.0.9".parse().expect("ip"))
                && a.detail.contains("blocklisted for 600 s"))
    );
    assert!(
        alerts
            .iter()
            .any(|a| a.source == Some("127.0.0.10".parse().expect("ip"))
                && a.detail.contains("malformed"))
    );
}
