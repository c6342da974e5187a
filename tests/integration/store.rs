//! The store through the appliance: nothing is answered before it is durable, and an
//! upgrade from 0.1 keeps the data.
//!
//! Upgrading from 0.1 (the sled store): the fixture in `tests/fixtures/sled-0.1` was made
//! by that release through its API (see `generate.rs` there). Its data directory is
//! refused by name, untouched; its backup restores on today's engine to the same API state.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-0.1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("read")));
        }
    }
    out.sort();
    out
}

#[test]
fn a_data_directory_of_the_sled_release_is_refused_by_name_and_left_untouched() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    copy_dir(&fixture().join("data-dir"), &data);
    let before = all_bytes(&data);
    let output = sightline_at(&data, &["check"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("sled") && text.contains("Upgrading from 0.1"),
        "{text}"
    );
    assert!(
        text.contains(&data.join("store").display().to_string()),
        "{text}"
    );
    let store = sightline::store::Store::open_data_dir(&data, 1 << 20)
        .err()
        .expect("refused");
    assert!(
        matches!(store, sightline::store::StoreError::LegacyEngine { .. }),
        "{store}"
    );
    assert_eq!(
        all_bytes(&data),
        before,
        "nothing in the old directory changed"
    );
    assert!(!data.join(sightline::store::engine::STORE_FILE).exists());
}

#[tokio::test]
async fn a_backup_taken_by_the_sled_release_restores_to_the_same_api_state() {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture().join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let dir = tempfile::tempdir().expect("dir");
    let target = dir.path().join("restored");
    let report = sightline::store::backup::restore(
        &fixture().join("backups"),
        &fixture().join("backup-identity.key"),
        &target,
    )
    .expect("restore");
    assert_eq!(report.archives, 1);
    assert_eq!(report.files, 3, "the still, the CA and its key: {report:?}");

    let restored = target.clone();
    let app = TestAppliance::start_with(move |c| c.data_dir = restored).await;
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    let mut users = admin.get("/api/users").await.json();
    for user in users.as_array_mut().expect("users") {
        user.as_object_mut().expect("obj").remove("locked_until_ms");
    }
    assert_eq!(users, expected["users"]);
    assert_eq!(admin.get("/api/groups").await.json(), expected["groups"]);
    // Settings added since 0.1 take their defaults on an account from 0.1.
    let mut account = expected["account"].clone();
    account["policy"]["session_retention_days"] = serde_json::json!(365);
    assert_eq!(admin.get("/api/account").await.json(), account);
    let mut sessions = admin.get("/api/sessions").await.json();
    for s in sessions.as_array_mut().expect("sessions") {
        s.as_object_mut().expect("obj").remove("customer_connected");
    }
    // Fields added since 0.1: the device, and how many devices joined (0 for a session
    // from before devices were bound to the invitation).
    let mut expected_sessions = expected["sessions"].clone();
    for s in expected_sessions.as_array_mut().expect("sessions") {
        s["customer_device"] = serde_json::Value::Null;
        s["customer_devices"] = serde_json::json!(0);
    }
    assert_eq!(sessions, expected_sessions);
    let id = expected["session_id"].as_str().expect("id");
    assert_eq!(
        admin
            .get(&format!("/api/sessions/{id}/transcript"))
            .await
            .text(),
        expected["transcript"].as_str().expect("transcript")
    );
    let still = admin
        .get(&format!(
            "/api/sessions/{id}/stills/{}",
            expected["still_id"].as_str().expect("still")
        ))
        .await;
    assert_eq!(still.status, 200);
    assert_eq!(
        still.body.len() as u64,
        expected["still_png_len"].as_u64().expect("len")
    );
    assert!(still.body.starts_with(b"\x89PNG"));

    // The security log came along whole, and its chain still verifies.
    let kinds: Vec<Value> = app.audit_kinds().into_iter().map(Value::String).collect();
    // Everything up to the backup (its own entry was written after it was taken).
    let old = expected["audit_kinds"].as_array().expect("kinds");
    let old = &old[..old.len() - 1];
    assert_eq!(&kinds[..old.len()], old, "the old entries first, in order");
    let entries = app.running().audit_entries().expect("entries");
    sightline::audit::verify_chain(&entries).expect("chain verifies");
}

/// A write made outside any request, and the durability mark that covers it.
fn probe_write(app: &TestAppliance, n: u64) -> u64 {
    let store = app.running().store();
    store
        .global::<u64>("durability_probe")
        .expect("probe")
        .put("probe", &n)
        .expect("write");
    store.durability_marks().0
}

fn assert_durable(app: &TestAppliance, mark: u64, what: &str) {
    let (_, durable) = app.running().store().durability_marks();
    assert!(
        durable >= mark,
        "{what} was answered before the writes made before it were durable ({durable} < {mark})"
    );
}

#[tokio::test]
async fn no_route_answers_before_every_earlier_write_is_durable() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;
    let bearer = format!("Bearer {token}");
    let mut routes = sightline::api::routes();
    // Signing out last, so the routes before it are called signed in.
    routes.sort_by_key(|r| r.path.starts_with("/api/logout"));
    let mut n = 0;
    for route in routes {
        let path = route.path.replace("{id}", &id).replace(['{', '}'], "");
        n += 1;
        let mark = probe_write(&app, n);
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-sightline-csrf", "1"),
        ];
        if route.access == sightline::api::Access::Invitation {
            headers.push(("authorization", &bearer));
        }
        let response = admin
            .request(route.method.as_str(), &path, &headers, b"{}".to_vec())
            .await;
        assert_durable(
            &app,
            mark,
            &format!("{} {path} ({})", route.method, response.status),
        );
    }
    for page in [
        "/",
        "/c",
        "/assets/console.js",
        "/ca.pem",
        "/healthz",
        "/api/no-such-route",
    ] {
        n += 1;
        let mark = probe_write(&app, n);
        let response = app.client().get(page).await;
        assert_durable(&app, mark, &format!("GET {page} ({})", response.status));
    }
}

/// The next message either socket receives, if one comes within `wait`.
async fn next_of_either(a: &mut Ws, b: &mut Ws, wait: std::time::Duration) -> Option<Value> {
    use futures_util::StreamExt;
    let read = async {
        loop {
            let message = tokio::select! {
                m = a.next() => m,
                m = b.next() => m,
            };
            match message {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    return serde_json::from_str::<Value>(&text).ok();
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

#[tokio::test]
async fn no_signaling_message_leaves_before_every_earlier_write_is_durable() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;
    let (mut tech, mut customer, _) = watch_and_join(&app, &admin, &id, &token).await;
    recv_state(&mut customer, "joined").await;
    let arrow = serde_json::json!({"kind": "arrow", "color": "#ff0000", "from": [0.1, 0.2], "to": [0.5, 0.5]});
    // Every kind of message a participant sends after joining, from the side that sends
    // it; `end` last. Each must be followed by some message to one side.
    let steps: Vec<(bool, Value)> = vec![
        (
            false,
            serde_json::json!({"type": "consent", "camera": true, "microphone": true}),
        ),
        (false, serde_json::json!({"type": "pause", "paused": true})),
        (false, serde_json::json!({"type": "pause", "paused": false})),
        (false, serde_json::json!({"type": "chat", "text": "hello"})),
        (
            true,
            serde_json::json!({"type": "chat", "text": "hello back"}),
        ),
        (true, serde_json::json!({"type": "draw", "shape": arrow})),
        (true, serde_json::json!({"type": "undo"})),
        (true, serde_json::json!({"type": "clear_drawing"})),
        (
            true,
            serde_json::json!({"type": "pointer", "at": [0.3, 0.3]}),
        ),
        (true, serde_json::json!({"type": "camera", "torch": true})),
        (
            false,
            serde_json::json!({"type": "capabilities", "capabilities": {"cameras": 1, "torch": null, "zoom": null}}),
        ),
        (true, serde_json::json!({"type": "snapshot"})),
        (true, serde_json::json!({"type": "freeze", "frozen": true})),
        (true, serde_json::json!({"type": "record", "on": true})),
        (false, serde_json::json!({"type": "mute", "muted": true})),
        (true, serde_json::json!({"type": "ping"})),
        (true, serde_json::json!({"type": "not_a_message"})),
        (false, serde_json::json!({"type": "end"})),
    ];
    for (n, (from_technician, message)) in steps.into_iter().enumerate() {
        let quiet = std::time::Duration::from_millis(150);
        while next_of_either(&mut tech, &mut customer, quiet)
            .await
            .is_some()
        {}
        let mark = probe_write(&app, n as u64);
        let sender = if from_technician {
            &mut tech
        } else {
            &mut customer
        };
        send(sender, message.clone()).await;
        let answer = next_of_either(&mut tech, &mut customer, std::time::Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{message} was followed by a message"));
        assert_durable(
            &app,
            mark,
            &format!("{message} (answered by {})", answer["type"]),
        );
    }
}

#[test]
fn the_configured_cache_default_is_the_stores_own() {
    assert_eq!(
        sightline::config::Config::default().store.cache_bytes(),
        sightline::store::DEFAULT_CACHE_BYTES
    );
}
