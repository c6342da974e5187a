//! The live session toolkit through the real HTTP and WebSocket API: drawings, camera
//! requests, stills, freeze frames, recording refusals, colleagues and observers, and the
//! session record with its consent receipt.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn drawings_camera_requests_and_stills_go_where_they_should() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, keys, mut tech, mut customer) = consented_session(&app, &mut admin).await;

    // A drawing reaches everyone, whole; bad shapes and customers' drawings are refused.
    let arrow = json!({"kind": "arrow", "color": "#ff0000", "from": [0.1, 0.2], "to": [0.5, 0.5]});
    send(&mut tech, json!({"type": "draw", "shape": arrow})).await;
    let drawing = recv_type(&mut customer, "drawing").await;
    assert_eq!(drawing["shapes"], json!([arrow]));
    for bad in [
        json!({"kind": "arrow", "color": "#ff0000", "from": [0.1, 0.2], "to": [1.5, 0.5]}),
        json!({"kind": "text", "color": "red", "at": [0.1, 0.2], "text": "here"}),
        json!({"kind": "pen", "color": "#000000", "points": []}),
    ] {
        send(&mut tech, json!({"type": "draw", "shape": bad})).await;
        assert_eq!(recv_type(&mut tech, "error").await["code"], "bad_request");
    }
    send(&mut customer, json!({"type": "draw", "shape": arrow})).await;
    let refused = recv_type(&mut customer, "error").await;
    assert_eq!(refused["code"], "unexpected");
    assert!(
        refused["message"]
            .as_str()
            .expect("text")
            .contains("technician")
    );
    send(&mut tech, json!({"type": "pointer", "at": [0.3, 0.3]})).await;
    assert_eq!(
        recv_type(&mut customer, "pointer").await["at"],
        json!([0.3, 0.3])
    );
    send(&mut tech, json!({"type": "undo"})).await;
    assert_eq!(
        recv_type(&mut customer, "drawing").await["shapes"],
        json!([])
    );

    // Camera requests go to the customer's page; what it reports goes to the console.
    send(&mut tech, json!({"type": "camera", "torch": true})).await;
    let request = recv_type(&mut customer, "camera").await;
    assert_eq!(request["torch"], true);
    send(&mut tech, json!({"type": "camera"})).await;
    assert_eq!(recv_type(&mut tech, "error").await["code"], "bad_request");
    send(
        &mut customer,
        json!({"type": "capabilities", "capabilities": {"cameras": 2, "torch": null, "zoom": null}}),
    )
    .await;
    let capabilities = recv_type(&mut tech, "capabilities").await;
    assert_eq!(capabilities["capabilities"]["cameras"], 2);
    assert_eq!(capabilities["capabilities"]["torch"], json!(null));

    // A snapshot: asked for by the technician, uploaded by the page for that request only.
    send(&mut tech, json!({"type": "draw", "shape": arrow})).await;
    recv_type(&mut customer, "drawing").await;
    send(&mut tech, json!({"type": "snapshot"})).await;
    let capture = recv_type(&mut customer, "capture").await;
    assert_eq!(capture["purpose"], "snapshot");
    let request = capture["request"].as_str().expect("request").to_owned();
    let unasked = upload(&app, &keys, "no-such-request", png(1920, 1080)).await;
    assert_eq!(unasked.status, 404);
    assert!(app.audit_kinds().contains(&"unexpected_upload".to_owned()));
    let not_an_image = upload(&app, &keys, &request, b"GIF89a-not-really".to_vec()).await;
    assert_eq!(not_an_image.status, 400, "{}", not_an_image.text());
    let again = upload(&app, &keys, &request, png(10, 10)).await;
    assert_eq!(
        again.status, 404,
        "the request was used up by the bad upload"
    );
    send(&mut tech, json!({"type": "snapshot"})).await;
    let request = recv_type(&mut customer, "capture").await["request"]
        .as_str()
        .expect("request")
        .to_owned();
    let image = png(1920, 1080);
    let stored = upload(&app, &keys, &request, image.clone()).await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    let still = stored.json();
    assert_eq!(
        (still["width"].clone(), still["height"].clone()),
        (json!(1920), json!(1080))
    );
    assert_eq!(
        still["annotations"],
        json!([arrow]),
        "the drawing is kept with the photo"
    );
    assert_eq!(
        recv_type(&mut tech, "still").await["still"]["id"],
        still["id"]
    );
    let still_id = still["id"].as_str().expect("id").to_owned();
    let fetched = admin
        .get(&format!("/api/sessions/{id}/stills/{still_id}"))
        .await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(fetched.body, image);
    let replay = upload(&app, &keys, &request, png(10, 10)).await;
    assert_eq!(replay.status, 404, "a request is answered once");

    // Freeze: the still both sides see; unfreezing returns to live.
    send(&mut tech, json!({"type": "freeze", "frozen": true})).await;
    let capture = recv_type(&mut customer, "capture").await;
    assert_eq!(capture["purpose"], "freeze");
    let frozen = upload(
        &app,
        &keys,
        capture["request"].as_str().expect("request"),
        png(1280, 720),
    )
    .await;
    assert_eq!(frozen.status, 201);
    let frozen_id = frozen.json()["id"].clone();
    loop {
        let state = recv_type(&mut tech, "state").await;
        if state["session"]["frozen"] == frozen_id {
            break;
        }
    }
    send(&mut tech, json!({"type": "freeze", "frozen": false})).await;
    loop {
        let state = recv_type(&mut customer, "state").await;
        if state["session"]["frozen"].is_null() {
            break;
        }
    }

    // Recording: the account's policy does not allow it (the default).
    send(&mut tech, json!({"type": "record", "on": true})).await;
    assert_eq!(recv_type(&mut tech, "error").await["code"], "not_allowed");
}

#[tokio::test]
async fn recording_needs_the_policy_and_the_customers_own_consent() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let policy = admin.get("/api/account").await.json()["policy"].clone();
    let mut allowed = policy.clone();
    allowed["allow_recording"] = json!(true);
    let changed = admin
        .json("PATCH", "/api/account", &json!({"policy": allowed}))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());

    let (id, token, _) = create_session(&mut admin).await;
    let invitation = app
        .client()
        .get_with(
            "/api/invitation",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
        .json();
    assert_eq!(invitation["optional"], json!(["microphone", "recording"]));
    let (mut tech, mut customer, _) = watch_and_join(&app, &admin, &id, &token).await;
    send(
        &mut customer,
        json!({"type": "consent", "camera": true, "microphone": true}),
    )
    .await;
    recv_state(&mut tech, "consented").await;
    send(&mut tech, json!({"type": "record", "on": true})).await;
    let refused = recv_type(&mut tech, "error").await;
    assert_eq!(refused["code"], "not_allowed");
    assert!(
        refused["message"]
            .as_str()
            .expect("text")
            .contains("agreed")
    );

    send(
        &mut customer,
        json!({"type": "consent", "camera": true, "microphone": true, "recording": true}),
    )
    .await;
    send(&mut tech, json!({"type": "record", "on": true})).await;
    loop {
        let state = recv_type(&mut customer, "state").await;
        if state["session"]["recording"] == true {
            break;
        }
    }
    // The customer withdraws: the recording stops at once.
    send(
        &mut customer,
        json!({"type": "consent", "camera": true, "microphone": true, "recording": false}),
    )
    .await;
    loop {
        let state = recv_type(&mut tech, "state").await;
        if state["session"]["recording"] == false
            && state["session"]["consent"]["recording"] == false
        {
            break;
        }
    }
    send(&mut customer, json!({"type": "end"})).await;
    recv_state(&mut tech, "ended").await;

    let record = admin
        .get(&format!("/api/sessions/{id}/record"))
        .await
        .json();
    let events: Vec<(&str, bool)> = record["consent_log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().expect("event"),
                e["recording"].as_bool().expect("bool"),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("granted", false),
            ("changed", true),
            ("changed", false),
            ("revoked", false)
        ]
    );
    assert!(record["duration_secs"].is_u64());
    assert!(app.audit_kinds().contains(&"recording_started".to_owned()));
}

#[tokio::test]
async fn colleagues_join_as_observers_or_participants_within_the_account_only() {
    let mut app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let colleague_id = create_technician(&mut admin, "tess@example.com", vec![]).await;
    let mut tess = first_login(&app, "tess@example.com").await;
    let (id, token, _) = create_session(&mut admin).await;

    // Before being invited, the session is as good as missing for her.
    assert_eq!(tess.get(&format!("/api/sessions/{id}")).await.status, 404);
    let choices = admin.get("/api/colleagues").await.json();
    assert_eq!(choices[0]["id"], json!(colleague_id));
    let invited = admin
        .json(
            "POST",
            &format!("/api/sessions/{id}/colleagues"),
            &json!({"user_id": colleague_id, "role": "observer"}),
        )
        .await;
    assert_eq!(invited.status, 200, "{}", invited.text());
    assert_eq!(invited.json()["colleagues"][0]["role"], "observer");
    assert_eq!(tess.get(&format!("/api/sessions/{id}")).await.status, 200);

    // An observer watches and chats but cannot act or invite.
    let (_tech, mut customer, _) = watch_and_join(&app, &admin, &id, &token).await;
    recv_state(&mut customer, "joined").await;
    let mut observer = tess.websocket().await;
    send(&mut observer, json!({"type": "watch", "session_id": id})).await;
    recv_type(&mut observer, "state").await;
    send(
        &mut observer,
        json!({"type": "draw", "shape": {"kind": "arrow", "color": "#ff0000", "from": [0.1, 0.1], "to": [0.2, 0.2]}}),
    )
    .await;
    assert_eq!(
        recv_type(&mut observer, "error").await["code"],
        "not_allowed"
    );
    send(
        &mut observer,
        json!({"type": "chat", "text": "Watching along."}),
    )
    .await;
    assert_eq!(
        recv_type(&mut customer, "chat").await["line"]["author"],
        "Tess Tech"
    );
    let by_observer = tess
        .json(
            "POST",
            &format!("/api/sessions/{id}/colleagues"),
            &json!({"user_id": colleague_id, "role": "participant"}),
        )
        .await;
    assert_eq!(by_observer.status, 403);

    // Promoted to participant, she may draw.
    admin
        .json(
            "POST",
            &format!("/api/sessions/{id}/colleagues"),
            &json!({"user_id": colleague_id, "role": "participant"}),
        )
        .await;
    send(
        &mut observer,
        json!({"type": "draw", "shape": {"kind": "arrow", "color": "#ff0000", "from": [0.1, 0.1], "to": [0.2, 0.2]}}),
    )
    .await;
    assert_eq!(
        recv_type(&mut customer, "drawing").await["shapes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Someone of another account cannot be invited: answered like a missing user.
    let data_dir = app.config.data_dir.clone();
    app.stop().await;
    create_account_offline(&data_dir, "Other Org", "bob@other.example");
    app.restart().await;
    let (mut admin, _) = login(&app, "ada@example.com", "Camera4support").await;
    let others = admin.get("/api/colleagues").await.json();
    assert!(
        others
            .as_array()
            .expect("list")
            .iter()
            .all(|u| u["display_name"] != "bob@other.example")
    );
    let stranger = admin
        .json(
            "POST",
            &format!("/api/sessions/{id}/colleagues"),
            &json!({"user_id": "0123456789abcdef0123456789abcdef", "role": "observer"}),
        )
        .await;
    assert_eq!(stranger.status, 404);

    // Removing her takes the session away again.
    let removed = admin
        .json(
            "DELETE",
            &format!("/api/sessions/{id}/colleagues/{colleague_id}"),
            &json!({}),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    let (mut tess, _) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    assert_eq!(tess.get(&format!("/api/sessions/{id}")).await.status, 404);
}

/// Raw connections to the HTTPS port that are neither TLS nor ICE-TCP — garbage, a STUN
/// frame cut short, silence — are each closed, while HTTPS and a session's signaling go on.
#[tokio::test]
async fn junk_on_the_https_port_is_closed_without_disturbing_anyone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;
    let (mut tech, mut customer, _) = watch_and_join(&app, &admin, &id, &token).await;
    recv_state(&mut customer, "joined").await;

    let started = std::time::Instant::now();
    let mut probes = Vec::new();
    let partial_stun: &[u8] = &[0x00, 0x50, 0x00, 0x01, 0x00, 0x30, 0x21, 0x12];
    for bytes in [
        b"\x00\x07garbage-not-tls".as_slice(),
        partial_stun,
        b"".as_slice(),
    ] {
        let addr = app.addr();
        let bytes = bytes.to_vec();
        probes.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.write_all(&bytes).await.expect("write");
            let mut buf = [0u8; 64];
            // Closed means end of stream (or a reset): no answer ever comes.
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buf))
                    .await
                    .expect("closed within 20 s");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }));
    }
    // Meanwhile the console and the session work.
    for _ in 0..3 {
        assert_eq!(admin.get("/api/me").await.status, 200);
        send(&mut tech, json!({"type": "ping"})).await;
        recv_type(&mut tech, "pong").await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    for probe in probes {
        probe.await.expect("probe");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    send(&mut customer, json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(
        recv_type(&mut tech, "chat").await["line"]["text"],
        "still here"
    );
    let metrics = metrics_text(app.running().metrics_addr.expect("metrics")).await;
    let rejected = metrics
        .lines()
        .find(|l| l.starts_with("sightline_https_connections_rejected_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("rejected counter");
    assert_eq!(rejected, 2, "the garbage and the silent connection");
}

/// An ICE restart is a new offer PATCHed to the connection's resource: answered for the
/// owner's own connection, refused for anyone else's or for connections that are gone.
#[tokio::test]
async fn ice_restarts_are_answered_for_the_owners_connection_only() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, keys, _tech, _customer) = consented_session(&app, &mut admin).await;

    let mut media = PageMedia::new();
    let sdp = keys.headers(&[("content-type", "application/sdp")]);
    let created = app
        .client()
        .request(
            "POST",
            "/api/invitation/whip",
            &sdp,
            media.offer.clone().into_bytes(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let resource = created.header("location").expect("location");
    media.accept(&created.text());
    let restart = media.restart();
    let old_ufrag = created
        .text()
        .lines()
        .find(|l| l.starts_with("a=ice-ufrag"))
        .map(str::to_owned);
    let restarted = app
        .client()
        .request("PATCH", &resource, &sdp, restart.clone().into_bytes())
        .await;
    assert_eq!(restarted.status, 200, "{}", restarted.text());
    let new_ufrag = restarted
        .text()
        .lines()
        .find(|l| l.starts_with("a=ice-ufrag"))
        .map(str::to_owned);
    assert!(
        new_ufrag.is_some() && new_ufrag != old_ufrag,
        "new ICE credentials in the answer"
    );

    let garbage = app
        .client()
        .request("PATCH", &resource, &sdp, b"not sdp".to_vec())
        .await;
    assert_eq!(garbage.status, 400);
    let someone_elses = admin
        .request(
            "PATCH",
            &format!(
                "/api/sessions/{id}/whep/{}",
                resource.rsplit('/').next().expect("peer")
            ),
            &[
                ("content-type", "application/sdp"),
                ("x-sightline-csrf", "1"),
            ],
            restart.clone().into_bytes(),
        )
        .await;
    assert_eq!(
        someone_elses.status, 404,
        "a technician cannot restart the customer's connection"
    );
    let unknown = app
        .client()
        .request(
            "PATCH",
            "/api/invitation/whip/999999",
            &sdp,
            restart.into_bytes(),
        )
        .await;
    assert_eq!(unknown.status, 404);
}
