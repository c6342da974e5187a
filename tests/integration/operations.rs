//! Running the appliance as a service: systemd readiness and watchdog, metrics, and the
//! security log's integrity check.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;
use sightline::systemd::SystemdNotify;

/// Every notification that arrives within `window`.
fn drain(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let mut messages = Vec::new();
    let end = Instant::now() + window;
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    messages
}

// Several threads: the checks below block their own thread while the appliance runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_and_a_watchdog_that_stops_while_the_media_loop_stalls() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    let notify = SystemdNotify::new(path.to_string_lossy(), Some(Duration::from_millis(400)));
    let app = TestAppliance::start_supervised(|_| {}, Some(notify)).await;

    let first = drain(&socket, Duration::from_millis(700));
    assert!(first[0].starts_with("READY=1"), "{first:?}");
    assert!(first[0].contains(&format!(
        "STATUS=Console: https://127.0.0.1:{}/",
        app.addr().port()
    )));
    assert!(
        first.iter().any(|m| m == "WATCHDOG=1"),
        "fed while healthy: {first:?}"
    );

    // Stall the media loop for 1.5 s: the watchdog must not be fed in that time.
    app.running().media().stall(Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain(&socket, Duration::from_millis(1)); // what was sent before the stall bit
    let during = drain(&socket, Duration::from_millis(900));
    assert!(
        !during.iter().any(|m| m == "WATCHDOG=1"),
        "fed during a stall: {during:?}"
    );
    let after = drain(&socket, Duration::from_millis(1200));
    assert!(
        after.iter().any(|m| m == "WATCHDOG=1"),
        "fed again after the stall: {after:?}"
    );
}

#[tokio::test]
async fn prometheus_metrics_count_what_happens() {
    let app = TestAppliance::start().await;
    app.set_up().await;
    for _ in 0..5 {
        try_login(&app, "ada@example.com", "Wrong4pass").await;
    }
    for _ in 0..2 {
        let r = app
            .client()
            .post_json("/api/join/pin", &serde_json::json!({"pin": "000000"}))
            .await;
        assert_eq!(r.status, 403);
    }
    let text = metrics_text(app.running().metrics_addr.expect("metrics listener")).await;
    assert!(text.contains("sightline_login_failures_total 5"), "{text}");
    assert!(
        text.contains("sightline_guesses_rejected_total 2"),
        "{text}"
    );
    assert!(text.contains("sightline_anomaly_alerts_total 0"), "{text}");
    assert!(text.contains("sightline_lockouts_total 1"), "{text}");
    assert!(text.contains("# TYPE sightline_media_frames_forwarded_total counter"));
    let size = text
        .lines()
        .find_map(|l| l.strip_prefix("sightline_store_size_bytes "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("store size");
    assert!(size > 0);
}

#[tokio::test]
async fn the_security_log_verifies_and_exports_as_json_lines() {
    let mut app = TestAppliance::start().await;
    app.set_up().await;
    try_login(&app, "ada@example.com", "Wrong4pass").await;
    app.stop().await;
    let run = |args: &[&str]| sightline_at(&app.config.data_dir, args);
    let verified = run(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("hash chain is intact"));
    let exported = run(&["audit", "export"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&exported.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(lines.iter().any(|e| e["kind"] == "login_failed"));
    assert!(
        lines
            .iter()
            .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64))
    );
}

#[tokio::test]
async fn check_reports_each_item_and_fails_on_a_busy_port() {
    let mut app = TestAppliance::start().await;
    let busy = app.addr();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("sightline.toml");
    let data_dir = app.config.data_dir.clone();
    let write = |https: &str| {
        std::fs::write(
            &config,
            format!(
                "data_dir = {data_dir:?}\n[http]\nlisten = \"{https}\"\n[media]\nlisten = \"127.0.0.1:0\"\n"
            ),
        )
        .expect("config");
    };
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
            .arg("--config")
            .arg(&config)
            .arg("check")
            .output()
            .expect("check")
    };
    // While the appliance runs, its HTTPS port is taken and the store is in use.
    write(&busy.to_string());
    let running = check();
    let text = String::from_utf8_lossy(&running.stdout).into_owned();
    assert!(!running.status.success(), "{text}");
    assert!(text.contains("FAIL  https port"), "{text}");
    assert!(
        text.contains("ok    store: in use by the running appliance"),
        "{text}"
    );

    app.stop().await;
    write("127.0.0.1:0");
    let stopped = check();
    let text = String::from_utf8_lossy(&stopped.stdout).into_owned();
    assert!(
        stopped.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    for item in [
        "config",
        "https port",
        "media port",
        "certificate",
        "store",
        "firewall",
    ] {
        assert!(text.contains(&format!("ok    {item}")), "{item}: {text}");
    }
}

#[tokio::test]
async fn security_log_entries_are_forwarded_to_syslog_for_a_siem() {
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").expect("collector");
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let addr = collector.local_addr().expect("addr");
    let app = TestAppliance::start_with(move |c| c.audit.syslog_udp = Some(addr)).await;
    app.set_up().await;
    try_login(&app, "ada@example.com", "Wrong4pass").await;
    let mut buf = [0u8; 8192];
    let mut lines = Vec::new();
    while let Ok(n) = collector.recv(&mut buf) {
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = line.contains(" login_failed ");
        lines.push(line);
        if done {
            break;
        }
    }
    let failed = lines
        .iter()
        .find(|l| l.contains(" login_failed "))
        .expect("a login_failed message");
    // RFC 5424: <PRI>VERSION TIMESTAMP HOST APP PROCID MSGID SD MSG
    assert!(failed.starts_with("<85>1 20"), "{failed}");
    let json = failed
        .split_once(" - ")
        .expect("structured data separator")
        .1;
    let entry: serde_json::Value = serde_json::from_str(json).expect("JSON message");
    assert_eq!(entry["kind"], "login_failed");
    assert_eq!(entry["source"], "127.0.0.1");
    assert!(entry["hash"].as_str().is_some_and(|h| h.len() == 64));
}

#[test]
fn settings_come_from_defaults_file_environment_and_flags_and_config_show_says_which() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("sightline.toml");
    std::fs::write(&file, "[media]\nlisten = \"127.0.0.1:0\"\n").expect("config");
    let recipient_file = dir.path().join("recipient");
    let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    std::fs::write(&recipient_file, format!("{recipient}\n")).expect("secret");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&recipient_file, std::fs::Permissions::from_mode(0o600))
            .expect("a secret file only the appliance reads");
    }
    let data = dir.path().join("data");
    let run = |env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
            .env_clear()
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .args(["config", "show"])
            .output()
            .expect("sightline config show")
    };
    let out = run(&[
        ("SIGHTLINE_HTTP__PUBLIC_URL", "https://support.example.com"),
        ("SIGHTLINE_BACKUP__DIRECTORY", "/srv/backup"),
        (
            "SIGHTLINE_BACKUP__RECIPIENT_FILE",
            recipient_file.to_str().expect("utf-8"),
        ),
        ("SIGHTLINE_HTTP__LISTN", "0.0.0.0:1"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for line in [
        format!(
            "data_dir = {:?}  # --data-dir",
            data.to_str().expect("utf-8")
        ),
        "public_url = \"https://support.example.com\"  # $SIGHTLINE_HTTP__PUBLIC_URL".to_owned(),
        "listen = \"0.0.0.0:8443\"  # default".to_owned(),
        format!("listen = \"127.0.0.1:0\"  # {}", file.display()),
        format!(
            "recipient = \"{recipient}\"  # $SIGHTLINE_BACKUP__RECIPIENT_FILE ({})",
            recipient_file.display()
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}"
        );
    }
    assert!(
        stderr.contains("SIGHTLINE_HTTP__LISTN names no setting"),
        "the unknown variable is named: {stderr}"
    );

    let out = run(&[("SIGHTLINE_MEDIA__WORKERS", "many")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("SIGHTLINE_MEDIA__WORKERS"), "{stderr}");
}

#[tokio::test]
async fn init_prepares_an_appliance_unattended_and_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let password_file = dir.path().join("admin-password");
    std::fs::write(&password_file, "Tangerine kettle 47\n").expect("password");
    let init = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
            .env_clear()
            .arg("--data-dir")
            .arg(&data)
            .args([
                "init",
                "--organisation",
                "Example Utilities",
                "--admin-email",
                "Ada@Example.com",
                "--admin-name",
                "Ada Lovelace",
            ])
            .args(extra)
            .output()
            .expect("sightline init");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = init(&[
        "--admin-password-file",
        password_file.to_str().expect("utf-8"),
    ]);
    assert!(first.contains("account admin: ada@example.com"), "{first}");
    assert!(first.contains("-----BEGIN CERTIFICATE-----"), "{first}");
    assert!(!first.contains("temporary password"), "{first}");
    let again = init(&[]);
    assert!(again.contains("set up already"), "{again}");

    let app_data = data.clone();
    let app = TestAppliance::start_with(move |c| c.data_dir = app_data).await;
    assert!(
        app.running().setup_code.is_none(),
        "no setup page once initialised"
    );
    assert!(
        first.contains(app.running().ca_pem.trim_end()),
        "the CA init printed is the one the appliance serves"
    );
    let (mut admin, stage) = login(&app, "ada@example.com", "Tangerine kettle 47").await;
    assert_eq!(stage, "complete");
    let audit = admin.get("/api/audit").await.text();
    assert!(audit.contains("setup_completed"), "{audit}");
}

#[test]
fn init_without_a_password_hands_over_a_temporary_one_and_refuses_a_weak_one() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |data: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
            .env_clear()
            .arg("--data-dir")
            .arg(dir.path().join(data))
            .args([
                "init",
                "--organisation",
                "O",
                "--admin-email",
                "a@example.com",
            ])
            .args(["--admin-name", "A"])
            .args(extra)
            .output()
            .expect("sightline init")
    };
    let out = run("one", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("temporary password: "),
        "{stdout}"
    );
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "password").expect("weak");
    let out = run(
        "two",
        &["--admin-password-file", weak.to_str().expect("utf-8")],
    );
    assert!(!out.status.success(), "a common password is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
