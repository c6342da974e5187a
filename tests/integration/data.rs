//! Encrypted store, backups and the data lifecycle, through the real API and CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{Value, json};
use sightline::store::keys::MasterKey;

/// An admin backup identity (private file) and its public key.
fn backup_identity(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("admin-backup.key");
    MasterKey::generate().write(&path).expect("identity");
    let text = std::fs::read_to_string(&path).expect("read");
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key")
        .to_owned();
    (path, public)
}

async fn with_backups() -> (TestAppliance, tempfile::TempDir, PathBuf) {
    let keys = tempfile::tempdir().expect("dir");
    let (identity, public) = backup_identity(keys.path());
    let backups = keys.path().join("backups");
    let dir = backups.clone();
    let app = TestAppliance::start_with(move |c| {
        c.backup.directory = Some(dir);
        c.backup.recipient = Some(public);
    })
    .await;
    (app, keys, identity)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_marker_written_through_the_api_is_readable_on_disk_or_in_a_backup_and_no_file_is_shared()
 {
    let (mut app, keys, _) = with_backups().await;
    let markers = [
        "marker-admin-7c1f@example.com",
        "Marker Org 51f2",
        "Marker Admin 8d3a",
        "marker-tech-99b0@example.com",
        "Marker Tech 3e77",
        "MARKER-REF-4411",
        "Marker chat line 0e9c",
    ];
    let mut admin = app.client();
    let code = app.running().setup_code.clone().expect("code");
    let r = admin
        .post_json(
            "/api/setup",
            &json!({"code": code, "email": markers[0], "password": "Camera4support",
                    "display_name": markers[2], "organisation": markers[1]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = admin
        .json(
            "POST",
            "/api/users",
            &json!({"email": markers[3], "display_name": markers[4], "role": "technician",
                    "password": "Tangerine kettle 47"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = admin
        .json(
            "POST",
            "/api/sessions",
            &json!({"customer_reference": markers[5]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let session_id = r.json()["session"]["id"].as_str().expect("id").to_owned();
    let mut tech = admin.websocket().await;
    send(
        &mut tech,
        json!({"type": "watch", "session_id": session_id}),
    )
    .await;
    send(&mut tech, json!({"type": "chat", "text": markers[6]})).await;
    recv_type(&mut tech, "chat").await;
    app.running().backup_now(true).await.expect("backup");
    let data_dir = app.config.data_dir.clone();
    app.stop().await;

    let mut scanned = 0;
    for file in files_under(&data_dir)
        .into_iter()
        .chain(files_under(keys.path()))
    {
        if file.ends_with("admin-backup.key") {
            continue;
        }
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is readable by others (mode {mode:o})",
            file.display()
        );
        let bytes = std::fs::read(&file).expect("read");
        scanned += bytes.len();
        assert!(
            !contains(&bytes, b"PRIVATE KEY"),
            "a private key in plaintext in {}",
            file.display()
        );
        for marker in markers {
            for variant in [
                marker.to_owned(),
                marker.to_lowercase(),
                marker.to_uppercase(),
            ] {
                assert!(
                    !contains(&bytes, variant.as_bytes()),
                    "{variant:?} found in {}",
                    file.display()
                );
            }
        }
    }
    assert!(scanned > 10_000, "scanned {scanned} bytes");
}

#[tokio::test]
async fn a_group_or_other_readable_master_key_stops_the_start() {
    let mut app = TestAppliance::start().await;
    app.stop().await;
    let key = app.config.data_dir.join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err =
        sightline::appliance::start(app.config.clone(), std::sync::Arc::new(app.clock.clone()))
            .await
            .err()
            .expect("refused");
    let message = err.to_string();
    assert!(
        message.contains("master.key") && message.contains("chmod 600"),
        "{message}"
    );
}

async fn api_state(client: &mut Client) -> Value {
    let mut users = client.get("/api/users").await.json();
    for user in users.as_array_mut().expect("users") {
        user.as_object_mut().expect("obj").remove("locked_until_ms");
    }
    let mut sessions = client.get("/api/sessions").await.json();
    for s in sessions.as_array_mut().expect("sessions") {
        s.as_object_mut().expect("obj").remove("customer_connected");
    }
    json!({
        "users": users,
        "groups": client.get("/api/groups").await.json(),
        "sessions": sessions,
        "account": client.get("/api/account").await.json(),
    })
}

#[tokio::test]
async fn restore_into_an_empty_directory_gives_the_same_api_state() {
    let (mut app, keys, identity) = with_backups().await;
    let mut admin = app.set_up().await;
    create_group(&mut admin, "Field", json!({"require_2fa": true})).await;
    admin
        .json(
            "POST",
            "/api/users",
            &json!({"email": "tess@example.com", "display_name": "Tess",
              "role": "technician", "password": "Tangerine kettle 47"}),
        )
        .await;
    let full = app.running().backup_now(false).await.expect("full");
    assert!(full.to_string_lossy().ends_with("-full.age"));
    admin
        .json(
            "POST",
            "/api/sessions",
            &json!({"customer_reference": "T-1"}),
        )
        .await;
    change_account(
        &mut admin,
        json!({"subscription": {"seats": 7, "ends_ms": null}}),
    )
    .await;
    let incremental = app.running().backup_now(false).await.expect("incremental");
    assert!(incremental.to_string_lossy().ends_with("-incr.age"));
    let before = api_state(&mut admin).await;
    app.stop().await;

    let target = keys.path().join("restored");
    let backups = keys.path().join("backups");
    let report = sightline::store::backup::restore(&backups, &identity, &target).expect("restore");
    assert_eq!(report.archives, 2);
    let restored_dir = target.clone();
    let restored = TestAppliance::start_with(move |c| c.data_dir = restored_dir).await;
    let (mut admin, _) = login(&restored, "ada@example.com", "Camera4support").await;
    assert_eq!(api_state(&mut admin).await, before);
    assert_ne!(
        std::fs::read(target.join("master.key")).expect("new key"),
        std::fs::read(app.config.data_dir.join("master.key")).expect("old key"),
        "a restored appliance gets its own master key"
    );
    assert_eq!(
        restored.running().ca_pem,
        app.running.as_ref().map_or_else(
            || std::fs::read_to_string(app.config.data_dir.join("tls/ca.pem")).expect("ca"),
            |r| r.ca_pem.clone()
        )
    );
}

#[tokio::test]
async fn damaged_incomplete_or_misdirected_restores_are_refused_whole() {
    let (mut app, keys, identity) = with_backups().await;
    app.set_up().await;
    app.running().backup_now(true).await.expect("full");
    app.running().backup_now(false).await.expect("incr 1");
    let last = app.running().backup_now(false).await.expect("incr 2");
    app.stop().await;
    let backups = keys.path().join("backups");
    let target = keys.path().join("target");
    let restore = || sightline::store::backup::restore(&backups, &identity, &target);

    // Truncated.
    let original = std::fs::read(&last).expect("read");
    std::fs::write(&last, &original[..original.len() - 40]).expect("truncate");
    let err = restore().expect_err("truncated refused");
    assert!(
        err.to_string().contains("damaged") || err.to_string().contains("cannot be decrypted"),
        "{err}"
    );
    assert!(!target.exists(), "nothing half-restored");
    // One byte altered.
    let mut altered = original.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x40;
    std::fs::write(&last, &altered).expect("alter");
    assert!(restore().is_err());
    assert!(!target.exists());
    std::fs::write(&last, &original).expect("repair");
    // A missing incremental in the middle of the chain.
    let middle_archive = backups.join(
        std::fs::read_dir(&backups)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.contains("00000002-incr"))
            .expect("second archive"),
    );
    let saved = std::fs::read(&middle_archive).expect("read");
    std::fs::remove_file(&middle_archive).expect("remove");
    let err = restore().expect_err("gap refused");
    assert!(err.to_string().contains("does not continue"), "{err}");
    std::fs::write(&middle_archive, saved).expect("put back");
    // The wrong identity.
    let (stranger, _) = backup_identity(keys.path().join("..").as_path());
    assert!(sightline::store::backup::restore(&backups, &stranger, &target).is_err());
    // A non-empty target.
    std::fs::create_dir_all(&target).expect("mkdir");
    std::fs::write(target.join("keep.txt"), "x").expect("write");
    let err = restore().expect_err("non-empty refused");
    assert!(err.to_string().contains("not empty"), "{err}");
    std::fs::remove_dir_all(&target).expect("clean");
    restore().expect("the intact chain restores");
}

/// An archive anyone can make: the backup recipient is a public key. Encrypted to it, the
/// archive passes decryption and its digest; what it names must still stay inside the
/// files a backup holds.
fn crafted_archive(recipient: &str, lines: &[Value]) -> Vec<u8> {
    let mut plain = json!({"format": "sightline-backup-1", "seq": 99, "kind": "full",
        "id": "crafted", "base": null, "created_ms": 0})
    .to_string();
    plain.push('\n');
    for line in lines {
        plain.push_str(&line.to_string());
        plain.push('\n');
    }
    let digest = sightline::ids::sha256_hex(plain.as_bytes());
    plain.push_str(&json!({"t": "end", "sha256": digest}).to_string());
    plain.push('\n');
    let recipient: age::x25519::Recipient = recipient.parse().expect("recipient");
    age::encrypt(&recipient, plain.as_bytes()).expect("encrypt")
}

#[tokio::test]
async fn a_crafted_archive_cannot_touch_files_outside_what_a_backup_holds() {
    let (mut app, keys, identity) = with_backups().await;
    app.set_up().await;
    app.running().backup_now(true).await.expect("full");
    let recipient = app.config.backup.recipient.clone().expect("recipient");
    app.stop().await;
    let backups = keys.path().join("backups");
    let target = keys.path().join("target");
    let victim = keys.path().join("victim.txt");
    std::fs::write(&victim, "keep me").expect("victim");
    let crafted = backups.join("sightline-00000099-full.age");
    for line in [
        json!({"t": "file_removed", "path": victim.to_string_lossy()}),
        json!({"t": "file_removed", "path": "../victim.txt"}),
        json!({"t": "file", "path": "master.key", "v": "QUJD"}),
        json!({"t": "file", "path": "files/../../victim.txt", "v": "QUJD"}),
        json!({"t": "file", "path": "files/acct/../../store.redb", "v": "QUJD"}),
    ] {
        std::fs::write(
            &crafted,
            crafted_archive(&recipient, std::slice::from_ref(&line)),
        )
        .expect("write");
        let err =
            sightline::store::backup::restore(&backups, &identity, &target).expect_err("refused");
        assert!(err.to_string().contains("never holds"), "{line}: {err}");
        assert!(!target.exists(), "{line}: nothing half-restored");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "keep me",
            "{line}"
        );
    }
    std::fs::remove_file(&crafted).expect("remove");
    sightline::store::backup::restore(&backups, &identity, &target).expect("the real one restores");
}

#[tokio::test]
async fn an_account_deleted_after_a_backup_is_unreadable_in_that_backup() {
    let (mut app, keys, identity) = with_backups().await;
    app.set_up().await;
    let data_dir = app.config.data_dir.clone();
    app.stop().await;
    let (account, password) = create_account_offline(&data_dir, "Doomed Org", "bob@doomed.example");
    app.restart().await;
    login(&app, "bob@doomed.example", &password).await;
    app.running()
        .backup_now(true)
        .await
        .expect("backup with the account");
    app.stop().await;

    let deleted = sightline_at(
        &data_dir,
        &["admin", "account", "delete", "--account", &account],
    );
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let target = keys.path().join("restored");
    let report =
        sightline::store::backup::restore(&keys.path().join("backups"), &identity, &target)
            .expect("restore");
    assert!(report.skipped_without_key > 0, "{report:?}");
    let restored_dir = target.clone();
    let restored = TestAppliance::start_with(move |c| c.data_dir = restored_dir).await;
    assert_eq!(
        restored
            .client()
            .post_json(
                "/api/login",
                &json!({"email": "bob@doomed.example", "password": password})
            )
            .await
            .status,
        401
    );
    login(&restored, "ada@example.com", "Camera4support").await;
}

#[tokio::test]
async fn content_is_deleted_ninety_days_after_the_subscription_ends_not_before() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    change_account(
        &mut admin,
        json!({"subscription": {"seats": 5, "ends_ms": START_MS}}),
    )
    .await;
    create_session(&mut admin).await;
    app.clock.advance_secs(89 * 24 * 3600);
    assert_eq!(app.running().retention_sweep().await.expect("sweep"), 0);
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    assert_eq!(
        admin
            .get("/api/sessions")
            .await
            .json()
            .as_array()
            .expect("list")
            .len(),
        1
    );
    app.clock.advance_secs(24 * 3600);
    assert_eq!(app.running().retention_sweep().await.expect("sweep"), 1);
    assert_eq!(
        app.client()
            .post_json(
                "/api/login",
                &json!({"email": "ada@example.com", "password": "Camera4support"})
            )
            .await
            .status,
        401
    );
    assert!(app.audit_kinds().contains(&"account_deleted".to_owned()));
}

#[tokio::test]
async fn a_customers_content_is_exported_and_deleted_on_request() {
    let app = TestAppliance::start_with(|c| c.retention.deletion_delay_days = 7).await;
    let mut admin = app.set_up().await;
    for reference in ["CUST-1", "CUST-1", "CUST-2"] {
        let r = admin
            .json(
                "POST",
                "/api/sessions",
                &json!({"customer_reference": reference}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let export = admin.get("/api/export?customer_reference=CUST-1").await;
    assert_eq!(export.status, 200);
    assert_eq!(
        export.header("content-type").as_deref(),
        Some("application/x-tar")
    );
    let mut archive = tar::Archive::new(&export.body[..]);
    let mut sessions = None;
    let mut names = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        if name == "sessions.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("read");
            sessions = Some(serde_json::from_str::<Value>(&text).expect("json"));
        }
        names.push(name);
    }
    assert!(
        names.contains(&"manifest.json".to_owned()) && names.contains(&"audit.jsonl".to_owned())
    );
    let sessions = sessions.expect("sessions.json");
    assert_eq!(sessions.as_array().expect("array").len(), 2);
    assert!(
        sessions
            .as_array()
            .expect("array")
            .iter()
            .all(|s| s["customer_reference"] == "CUST-1")
    );
    let whole = admin.get("/api/export").await;
    assert_eq!(whole.status, 200);
    assert!(contains(&whole.body, b"users.json"));
    assert_eq!(
        admin
            .get("/api/export?customer_reference=NOBODY")
            .await
            .status,
        404
    );

    // Deletion on request waits for the configured window, then happens and is audited.
    let requested = admin
        .json(
            "POST",
            "/api/deletions",
            &json!({"customer_reference": "CUST-1"}),
        )
        .await;
    assert_eq!(requested.status, 202, "{}", requested.text());
    assert_eq!(
        admin
            .get("/api/deletions")
            .await
            .json()
            .as_array()
            .expect("list")
            .len(),
        1
    );
    app.clock.advance_secs(7 * 24 * 3600);
    app.running().retention_sweep().await.expect("sweep");
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    let left = admin.get("/api/sessions").await.json();
    let left = left.as_array().expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["customer_reference"], "CUST-2");
    assert_eq!(admin.get("/api/deletions").await.json(), json!([]));
    let entries = app.running().audit_entries().expect("audit");
    let deleted = entries
        .iter()
        .find(|e| serde_json::to_value(&e.kind).expect("kind") == "content_deleted")
        .expect("deletion audited");
    assert!(deleted.detail.contains("2 sessions") && deleted.detail.contains("on request of user"));
    assert!(
        !deleted.detail.contains("CUST-1"),
        "the reference itself is not logged"
    );

    // The console's trail of data requests: who exported and who asked for the deletion,
    // and only those; the identity log does not mix them in.
    let me = admin.get("/api/me").await.json();
    let trail = admin.get("/api/audit?topic=data").await.json();
    let trail = trail.as_array().expect("list");
    let kinds: Vec<&str> = trail.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "content_deleted",
            "deletion_requested",
            "data_exported",
            "data_exported"
        ]
    );
    assert!(
        trail.iter().all(|e| e["actor"] == me["user_id"]),
        "{trail:?}"
    );
    assert!(
        trail[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("due 2027-01-22T")),
        "the due date reads as a date: {}",
        trail[1]["detail"]
    );
    let identity = admin.get("/api/audit").await.json();
    assert!(identity.as_array().expect("list").iter().all(|e| {
        !["data_exported", "deletion_requested", "content_deleted"]
            .contains(&e["kind"].as_str().unwrap_or_default())
    }));
    assert_eq!(admin.get("/api/audit?topic=billing").await.status, 400);
}

#[tokio::test]
async fn a_single_session_is_deleted_at_once_by_default() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;
    let r = admin
        .request(
            "DELETE",
            &format!("/api/sessions/{id}"),
            &[("x-sightline-csrf", "1")],
            vec![],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(admin.get(&format!("/api/sessions/{id}")).await.status, 404);
    let invitation = app
        .client()
        .get_with(
            "/api/invitation",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(
        invitation.status, 403,
        "the invitation died with the session"
    );
}

#[tokio::test]
async fn the_offline_cli_rotates_the_master_key_backs_up_restores_and_exports() {
    let keys = tempfile::tempdir().expect("dir");
    let (identity, public) = backup_identity(keys.path());
    let mut app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    admin
        .json(
            "POST",
            "/api/sessions",
            &json!({"customer_reference": "CLI-REF"}),
        )
        .await;
    app.stop().await;
    let config = keys.path().join("sightline.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[backup]\ndirectory = {:?}\nrecipient = {:?}\n",
            app.config.data_dir,
            keys.path().join("backups"),
            public
        ),
    )
    .expect("config");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("cli");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let old_key = std::fs::read(app.config.data_dir.join("master.key")).expect("key");
    cli(&["keys", "rotate"]);
    assert_ne!(
        std::fs::read(app.config.data_dir.join("master.key")).expect("key"),
        old_key
    );
    assert!(cli(&["backup", "--full"]).contains("-full.age"));
    let export = keys.path().join("export.tar");
    let account = cli(&["admin", "user", "list"])
        .split('\t')
        .next()
        .expect("account id")
        .to_owned();
    cli(&[
        "export",
        "--account",
        &account,
        "--customer",
        "CLI-REF",
        "--out",
        export.to_str().expect("utf8"),
    ]);
    assert!(contains(&std::fs::read(&export).expect("tar"), b"CLI-REF"));

    // The rotated key still opens everything.
    app.restart().await;
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    assert_eq!(
        admin.get("/api/sessions").await.json()[0]["customer_reference"],
        "CLI-REF"
    );
    app.stop().await;

    let restored = keys.path().join("restored");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("--data-dir")
        .arg(&restored)
        .args(["restore", "--from"])
        .arg(keys.path().join("backups"))
        .arg("--identity")
        .arg(&identity)
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored_app = TestAppliance::start_with(move |c| c.data_dir = restored).await;
    let (mut admin, _) = login(&restored_app, "ada@example.com", "Camera4support").await;
    assert_eq!(
        admin.get("/api/sessions").await.json()[0]["customer_reference"],
        "CLI-REF"
    );
}

#[tokio::test]
async fn ended_sessions_are_kept_for_the_accounts_retention_period_then_deleted() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let policy = admin.get("/api/account").await.json()["policy"].clone();
    assert_eq!(policy["session_retention_days"], 365, "the default");
    for bad in [0, 3651] {
        let mut p = policy.clone();
        p["session_retention_days"] = json!(bad);
        let r = admin
            .json("PATCH", "/api/account", &json!({"policy": p}))
            .await;
        assert_eq!(r.status, 422, "{bad} days: {}", r.text());
        assert_eq!(r.json()["error"], "invalid");
    }

    // A session with a chat line and a still, ended now.
    let (id, token, mut tech, mut customer) = consented_session(&app, &mut admin).await;
    send(
        &mut customer,
        json!({"type": "chat", "text": "meter 4711 is broken"}),
    )
    .await;
    recv_type(&mut tech, "chat").await;
    send(&mut tech, json!({"type": "snapshot"})).await;
    let request = recv_type(&mut customer, "capture").await["request"]
        .as_str()
        .expect("request")
        .to_owned();
    assert_eq!(
        upload(&app, &token, &request, png(64, 48)).await.status,
        201
    );
    send(&mut tech, json!({"type": "end"})).await;
    recv_type(&mut customer, "ended").await;
    let session_files = || {
        files_under(&app.config.data_dir.join("files"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&id))
            .count()
    };
    assert_eq!(session_files(), 1, "the still is on disk");
    for file in files_under(&app.config.data_dir.join("files")) {
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }

    // Day 364 (and 23 hours): kept.
    app.clock.advance_secs(364 * 24 * 3600 + 23 * 3600);
    app.running().retention_sweep().await.expect("sweep");
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    assert_eq!(admin.get(&format!("/api/sessions/{id}")).await.status, 200);
    // Day 365: gone, with its chat and still, and the deletion is audited without content.
    app.clock.advance_secs(3600);
    app.running().retention_sweep().await.expect("sweep");
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    assert_eq!(admin.get(&format!("/api/sessions/{id}")).await.status, 404);
    assert_eq!(
        admin
            .get(&format!("/api/sessions/{id}/transcript"))
            .await
            .status,
        404
    );
    assert_eq!(session_files(), 0, "the still is gone from disk");
    let entries = app.running().audit_entries().expect("audit");
    let deletion = entries
        .iter()
        .find(|e| e.detail.contains(&id) && e.detail.contains("retention"))
        .expect("the deletion is audited");
    assert!(!deletion.detail.contains("4711"), "{}", deletion.detail);

    // A shorter period applies to what is there.
    let mut shorter = policy.clone();
    shorter["session_retention_days"] = json!(30);
    let r = admin
        .json("PATCH", "/api/account", &json!({"policy": shorter}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["policy"]["session_retention_days"], 30);
    let (second, ..) = create_session(&mut admin).await;
    admin
        .post_empty(&format!("/api/sessions/{second}/end"))
        .await;
    app.clock.advance_secs(30 * 24 * 3600);
    app.running().retention_sweep().await.expect("sweep");
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    assert_eq!(
        admin.get(&format!("/api/sessions/{second}")).await.status,
        404
    );
}

#[tokio::test]
async fn the_security_log_is_cut_after_its_retention_period_and_still_verifies() {
    let mut app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    admin
        .json("POST", "/api/groups", &json!({"name": "Old"}))
        .await;
    let before = app.running().audit_entries().expect("audit").len();
    // Day 399: nothing is old enough.
    app.clock.advance_secs(399 * 24 * 3600);
    app.running().retention_sweep().await.expect("sweep");
    assert_eq!(app.running().audit_entries().expect("audit").len(), before);
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    admin
        .json("POST", "/api/groups", &json!({"name": "New"}))
        .await;
    // Day 401: the first day's entries go, the later ones stay.
    app.clock.advance_secs(2 * 24 * 3600);
    app.running().retention_sweep().await.expect("sweep");
    let kinds = app.audit_kinds();
    assert!(!kinds.contains(&"setup_completed".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"login_succeeded".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"group_changed".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"audit_log_trimmed".to_owned()), "{kinds:?}");
    app.stop().await;
    let verify = sightline_at(&app.config.data_dir, &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A restored appliance serves the certificate the company imported, not the appliance
/// CA's.
#[tokio::test]
async fn an_imported_certificate_is_backed_up_and_served_after_a_restore() {
    use crate::certificates::{NAME, ca, import, leaf, until_served, write};
    let keys = tempfile::tempdir().expect("dir");
    let (identity, public) = backup_identity(keys.path());
    let backups = keys.path().join("backups");
    let dir = backups.clone();
    let mut app = TestAppliance::start_with(move |c| {
        c.backup.directory = Some(dir);
        c.backup.recipient = Some(public);
        c.http.server_names = vec![NAME.into()];
    })
    .await;
    let corporate = ca("Example Corp Issuing CA");
    let (cert, key) = leaf(&corporate, &[NAME, "127.0.0.1"], -1, 90);
    let chain = write(
        keys.path(),
        "chain.pem",
        &format!("{cert}{}", corporate.pem),
    );
    let key = write(keys.path(), "key.pem", &key);
    assert!(import(&app, &chain, &key).status.success());
    until_served(&app, &corporate.pem, &cert).await;
    app.running().backup_now(true).await.expect("backup");
    app.stop().await;

    let target = keys.path().join("restored");
    sightline::store::backup::restore(&backups, &identity, &target).expect("restore");
    let restored_dir = target.clone();
    let restored = TestAppliance::start_with(move |c| {
        c.data_dir = restored_dir;
        c.http.server_names = vec![NAME.into()];
    })
    .await;
    until_served(&restored, &corporate.pem, &cert).await;
}
