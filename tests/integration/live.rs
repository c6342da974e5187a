//! The appliance foundation through its real HTTP and WebSocket surface: setup, login,
//! support sessions, invitations, signaling errors, certificates and configuration.

use crate::common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn setup_code_creates_the_first_admin_exactly_once() {
    let mut app = TestAppliance::start().await;
    let mut anon = app.client();
    assert_eq!(anon.get("/api/setup").await.json()["needed"], true);
    let code = app
        .running()
        .setup_code
        .clone()
        .expect("a setup code on first start");
    assert!(code.len() >= 14, "{code}");

    let attempt = |code: &str| {
        json!({"code": code, "email": "Ada@Example.com", "password": "Camera4support",
               "display_name": "Ada", "organisation": "Example Utilities"})
    };
    let wrong = anon
        .post_json("/api/setup", &attempt("AAAA-BBBB-CCCC"))
        .await;
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.json()["error"], "bad_setup_code");

    // A weak password is refused before the code is consumed.
    let mut weak = attempt(&code);
    weak["password"] = json!("password");
    let weak = anon.post_json("/api/setup", &weak).await;
    assert_eq!(weak.status, 422, "{}", weak.text());

    let mut admin = app.client();
    let ok = admin
        .post_json("/api/setup", &attempt(&code.to_lowercase()))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let cookie = ok.header("set-cookie").expect("login cookie");
    for attribute in [
        "__Host-sightline=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let me = admin.get("/api/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["email"], "ada@example.com");
    assert_eq!(me.json()["role"], "account_admin");

    let reused = anon.post_json("/api/setup", &attempt(&code)).await;
    assert_eq!(reused.status, 409);
    assert_eq!(anon.get("/api/setup").await.json()["needed"], false);

    app.restart().await;
    assert!(
        app.running().setup_code.is_none(),
        "no new code once set up"
    );
    let kinds = app.audit_kinds();
    assert!(kinds.contains(&"setup_code_rejected".to_owned()));
    assert!(kinds.contains(&"setup_completed".to_owned()));
}

#[tokio::test]
async fn an_expired_setup_code_is_refused() {
    let app = TestAppliance::start().await;
    let code = app.running().setup_code.clone().expect("code");
    app.clock.advance_secs(24 * 3600);
    let response = app
        .client()
        .post_json(
            "/api/setup",
            &json!({"code": code, "email": "a@example.com", "password": "Camera4support",
                    "display_name": "A", "organisation": "B"}),
        )
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["error"], "bad_setup_code");
}

#[tokio::test]
async fn login_gives_the_same_answer_for_unknown_email_and_wrong_password() {
    let app = TestAppliance::start().await;
    app.set_up().await;
    let mut client = app.client();
    let wrong = client
        .post_json(
            "/api/login",
            &json!({"email": "ada@example.com", "password": "Wrong4pass"}),
        )
        .await;
    let unknown = client
        .post_json(
            "/api/login",
            &json!({"email": "bob@example.com", "password": "Wrong4pass"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body, unknown.body);
    assert!(client.cookie.is_none());

    let ok = client
        .post_json(
            "/api/login",
            &json!({"email": " ADA@example.com", "password": "Camera4support"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(client.get("/api/me").await.status, 200);

    let out = client.post_empty("/api/logout").await;
    assert_eq!(out.status, 204);
    assert_eq!(client.get("/api/me").await.status, 401);
}

#[tokio::test]
async fn login_sessions_expire_after_thirty_idle_minutes() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    app.clock.advance_secs(29 * 60);
    assert_eq!(admin.get("/api/me").await.status, 200);
    app.clock.advance_secs(30 * 60);
    assert_eq!(admin.get("/api/me").await.status, 401);
}

#[tokio::test]
async fn the_api_requires_sign_in_and_the_csrf_header() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let mut anon = app.client();
    assert_eq!(anon.get("/api/sessions").await.status, 401);
    let no_csrf = admin.request("POST", "/api/sessions", &[], vec![]).await;
    assert_eq!(no_csrf.status, 403);
    assert_eq!(no_csrf.json()["error"], "csrf");
    // Any Authorization header beside the cookie does not make the cookie less ambient.
    let with_bearer = admin
        .request(
            "POST",
            "/api/sessions",
            &[("authorization", "Bearer anything-at-all")],
            vec![],
        )
        .await;
    assert_eq!(with_bearer.status, 403, "{}", with_bearer.text());
    assert_eq!(with_bearer.json()["error"], "csrf");
    let malformed = admin
        .request(
            "POST",
            "/api/login",
            &[
                ("content-type", "application/json"),
                ("x-sightline-csrf", "1"),
            ],
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"], "bad_request");
    assert_eq!(anon.get("/api/no-such-route").await.status, 404);
}

#[tokio::test]
async fn a_session_gets_an_invitation_link_pin_and_qr_code() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let response = admin.post_empty("/api/sessions").await;
    assert_eq!(response.status, 201);
    let body = response.json();
    assert_eq!(body["session"]["state"], "waiting");
    let link = body["link"].as_str().expect("link");
    let token = link.split_once("/c#").expect("fragment").1;
    // 43 base64url characters carry 256 random bits.
    assert_eq!(token.len(), 43, "{link}");
    assert!(link.starts_with(&format!("https://127.0.0.1:{}/c#", app.addr().port())));
    let pin = body["pin"].as_str().expect("pin");
    assert!(pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()));
    assert!(
        body["qr_svg"]
            .as_str()
            .expect("qr")
            .starts_with("data:image/svg+xml;base64,")
    );

    let mut customer = app.client();
    let bearer = format!("Bearer {token}");
    let invitation = customer
        .get_with("/api/invitation", &[("authorization", &bearer)])
        .await;
    assert_eq!(invitation.status, 200);
    let invitation = invitation.json();
    assert_eq!(invitation["technician_name"], "Ada Lovelace");
    assert_eq!(invitation["organisation"], "Example Utilities");
    assert_eq!(invitation["shares"], json!(["camera"]));
    assert_eq!(invitation["optional"], json!(["microphone"]));

    let listed = admin.get("/api/sessions").await.json();
    assert_eq!(listed.as_array().expect("list").len(), 1);
}

#[tokio::test]
async fn invitations_that_are_wrong_expired_or_ended_are_refused() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let mut customer = app.client();
    let check = |token: &str| format!("Bearer {token}");

    let wrong = customer
        .get_with(
            "/api/invitation",
            &[("authorization", &check("x".repeat(43).as_str()))],
        )
        .await;
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.json()["error"], "invitation_invalid");
    assert_eq!(customer.get("/api/invitation").await.status, 401);

    // Expired before anyone joined.
    let (id, token, pin) = create_session(&mut admin).await;
    app.clock.advance_secs(15 * 60);
    let expired = customer
        .get_with("/api/invitation", &[("authorization", &check(&token))])
        .await;
    assert_eq!(expired.status, 403);
    let session = admin.get(&format!("/api/sessions/{id}")).await.json();
    assert_eq!(session["state"], "ended");
    assert_eq!(session["end_reason"], "expired");
    let by_pin = customer
        .post_json("/api/join/pin", &json!({"pin": pin}))
        .await;
    assert_eq!(by_pin.status, 403);

    // Used for one session only: once it ends, the link is dead.
    let (id, token, _) = create_session(&mut admin).await;
    let ok = customer
        .get_with("/api/invitation", &[("authorization", &check(&token))])
        .await;
    assert_eq!(ok.status, 200);
    let ended = admin.post_empty(&format!("/api/sessions/{id}/end")).await;
    assert_eq!(ended.status, 200);
    assert_eq!(ended.json()["end_reason"], "technician");
    let reused = customer
        .get_with("/api/invitation", &[("authorization", &check(&token))])
        .await;
    assert_eq!(reused.status, 403);
    // Only the made-up token was a guess; real tokens of ended sessions are not.
    let rejected = app
        .audit_kinds()
        .iter()
        .filter(|k| *k == "invitation_rejected")
        .count();
    assert_eq!(rejected, 1);
}

#[tokio::test]
async fn thirty_ordinary_sessions_from_one_address_raise_no_alarm() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    // Customers behind one NAT: every page comes from the same address.
    let mut customer = app.client_from("127.0.0.5");
    for n in 0..30 {
        let (id, token, _) = create_session(&mut admin).await;
        let bearer = format!("Bearer {token}");
        let invitation = customer
            .get_with("/api/invitation", &[("authorization", &bearer)])
            .await;
        assert_eq!(invitation.status, 200, "session {n}: {}", invitation.text());
        let mut page = app.client_from("127.0.0.5").websocket().await;
        send(&mut page, json!({"type": "join", "token": token})).await;
        recv_type(&mut page, "state").await;
        let ended = admin.post_empty(&format!("/api/sessions/{id}/end")).await;
        assert_eq!(ended.status, 200);
        recv_type(&mut page, "ended").await;
        // What the page does as it closes: leave the relay with the now-dead token.
        let goodbye = customer
            .request(
                "DELETE",
                "/api/invitation/whip/0",
                &[("authorization", &bearer), ("x-sightline-csrf", "1")],
                vec![],
            )
            .await;
        assert_eq!(goodbye.status, 403, "{}", goodbye.text());
    }
    let kinds = app.audit_kinds();
    for alarm in ["invitation_rejected", "source_throttled", "anomaly_alert"] {
        assert!(!kinds.iter().any(|k| k == alarm), "{alarm} in {kinds:?}");
    }
}

#[tokio::test]
async fn every_refusal_is_typed_json_whichever_layer_makes_it() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (_, keys, _tech, _customer) = consented_session(&app, &mut admin).await;
    let many_headers: Vec<(String, String)> = (0..120)
        .map(|n| (format!("x-filler-{n}"), "1".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/sessions".into(),
            vec![
                ("content-type", "application/json"),
                ("x-sightline-csrf", "1"),
            ],
            format!("{{\"customer_reference\": \"{}\"}}", "x".repeat(70_000)).into_bytes(),
            413,
            "too_large",
        ),
        (
            "DELETE",
            "/api/invitation/whip/not-a-number".into(),
            keys.headers(&[("x-sightline-csrf", "1")]),
            vec![],
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/invitation/whip".into(),
            keys.headers(&[
                ("content-type", "application/sdp"),
                ("x-sightline-csrf", "1"),
            ]),
            vec![0xff, 0xfe, 0x00, 0x76, 0x3d],
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/sessions".into(),
            vec![("x-sightline-csrf", "1")],
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/me".into(),
            many,
            vec![],
            431,
            "headers_too_large",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = admin.request(method, &path, &headers, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{method} {path}: {:?}",
            r.header("content-type")
        );
        assert_eq!(r.json()["error"], code, "{method} {path}: {}", r.text());
        assert!(
            r.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}"
        );
    }
    // The connection still works afterwards.
    assert_eq!(admin.get("/api/me").await.status, 200);
}

#[tokio::test]
async fn pin_guessing_is_throttled_per_source_and_audited() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (_, _, pin) = create_session(&mut admin).await;
    let wrong_pin = if pin == "000000" { "000001" } else { "000000" };

    let mut guesser = app.client_from("127.0.0.9");
    for _ in 0..10 {
        let r = guesser
            .post_json("/api/join/pin", &json!({"pin": wrong_pin}))
            .await;
        assert_eq!(r.status, 403);
        assert_eq!(r.json()["error"], "pin_invalid");
    }
    // Even the right PIN is refused to the guessing source now.
    let blocked = guesser
        .post_json("/api/join/pin", &json!({"pin": pin}))
        .await;
    assert_eq!(blocked.status, 429);
    assert_eq!(
        blocked.header("retry-after").as_deref(),
        Some("300"),
        "a throttled source is told when to come back"
    );
    let malformed = guesser
        .post_json("/api/join/pin", &json!({"pin": 12}))
        .await;
    assert_eq!(malformed.status, 400);

    let mut customer = app.client_from("127.0.0.10");
    let ok = customer
        .post_json("/api/join/pin", &json!({"pin": pin}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let token = ok.json()["token"].as_str().expect("token").to_owned();
    let invitation = customer
        .get_with(
            "/api/invitation",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(invitation.status, 200);

    let entries = app.running().audit_entries().expect("audit");
    let throttled = entries
        .iter()
        .find(|e| serde_json::to_value(&e.kind).expect("kind") == "source_throttled")
        .expect("a throttling entry");
    assert_eq!(throttled.source, Some("127.0.0.9".parse().expect("ip")));
    assert!(
        entries.iter().all(|e| !e.detail.contains(&pin)),
        "PINs never reach the audit log"
    );

    // The guessing source may try again after the penalty.
    app.clock.advance_secs(5 * 60);
    let (_, _, pin2) = create_session(&mut admin).await;
    let retry = guesser
        .post_json("/api/join/pin", &json!({"pin": pin2}))
        .await;
    assert_eq!(retry.status, 200);
}

#[tokio::test]
async fn the_pin_stops_working_once_the_customer_has_joined() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (_, token, pin) = create_session(&mut admin).await;
    let mut ws = app.client().websocket().await;
    send(&mut ws, json!({"type": "join", "token": token})).await;
    recv_state(&mut ws, "joined").await;
    let late = app
        .client_from("127.0.0.3")
        .post_json("/api/join/pin", &json!({"pin": pin}))
        .await;
    assert_eq!(late.status, 403);
}

#[tokio::test]
async fn signaling_answers_malformed_and_unexpected_messages_with_typed_errors() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;

    // The first message must identify the participant.
    let mut ws = app.client().websocket().await;
    send_raw(&mut ws, Message::Text("not json".into())).await;
    assert_eq!(recv(&mut ws).await.expect("error")["code"], "bad_message");
    assert!(
        recv(&mut ws).await.is_none(),
        "closed after a bad first message"
    );

    let mut ws = app.client().websocket().await;
    send(
        &mut ws,
        json!({"type": "consent", "camera": true, "microphone": false}),
    )
    .await;
    assert_eq!(recv(&mut ws).await.expect("error")["code"], "unexpected");

    let mut ws = app.client().websocket().await;
    send(&mut ws, json!({"type": "join", "token": "forged"})).await;
    assert_eq!(
        recv(&mut ws).await.expect("error")["code"],
        "invitation_invalid"
    );

    // Watching needs a signed-in technician.
    let mut ws = app.client().websocket().await;
    send(&mut ws, json!({"type": "watch", "session_id": id})).await;
    assert_eq!(recv(&mut ws).await.expect("error")["code"], "not_allowed");

    // A joined customer survives bad messages and keeps working.
    let mut customer = app.client().websocket().await;
    send(&mut customer, json!({"type": "join", "token": token})).await;
    recv_state(&mut customer, "joined").await;
    send(&mut customer, json!({"type": "explode"})).await;
    let error = recv_type(&mut customer, "error").await;
    assert_eq!(error["code"], "bad_message");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("explode")
    );
    send_raw(&mut customer, Message::Binary(vec![0u8, 1, 2].into())).await;
    assert_eq!(
        recv_type(&mut customer, "error").await["code"],
        "bad_message"
    );
    send(&mut customer, json!({"type": "join", "token": token})).await;
    assert_eq!(
        recv_type(&mut customer, "error").await["code"],
        "unexpected"
    );
    send(&mut customer, json!({"type": "ping"})).await;
    recv_type(&mut customer, "pong").await;

    // A second device with the same link is refused while the first is connected.
    let mut second = app.client().websocket().await;
    send(&mut second, json!({"type": "join", "token": token})).await;
    assert_eq!(
        recv(&mut second).await.expect("error")["code"],
        "already_joined"
    );

    // The technician follows; the customer consents; both see it.
    let mut tech = admin.websocket().await;
    send(&mut tech, json!({"type": "watch", "session_id": id})).await;
    recv_state(&mut tech, "joined").await;
    send(
        &mut customer,
        json!({"type": "consent", "camera": true, "microphone": false}),
    )
    .await;
    let state = recv_state(&mut tech, "consented").await;
    assert_eq!(state["session"]["consent"]["camera"], true);
    assert_eq!(state["session"]["consent"]["microphone"], false);
    // Only the customer may consent.
    send(
        &mut tech,
        json!({"type": "consent", "camera": true, "microphone": true}),
    )
    .await;
    assert_eq!(recv_type(&mut tech, "error").await["code"], "unexpected");

    // The technician ends it; the customer is told.
    send(&mut tech, json!({"type": "end"})).await;
    assert_eq!(
        recv_type(&mut customer, "ended").await["reason"],
        "technician"
    );
    assert!(
        app.audit_kinds()
            .contains(&"malformed_signaling".to_owned())
    );
}

#[tokio::test]
async fn declining_is_recorded_and_shown_to_the_technician() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;
    let (mut tech, mut customer, keys) = watch_and_join(&app, &admin, &id, &token).await;
    send(
        &mut customer,
        json!({"type": "consent", "camera": false, "microphone": true}),
    )
    .await;
    let state = recv_state(&mut tech, "declined").await;
    assert_eq!(state["session"]["consent"]["microphone"], false);
    assert!(app.audit_kinds().contains(&"consent_declined".to_owned()));

    // Without camera consent the customer cannot publish.
    let whip = app
        .client()
        .request(
            "POST",
            "/api/invitation/whip",
            &keys.headers(&[("content-type", "application/sdp")]),
            b"v=0\r\n".to_vec(),
        )
        .await;
    assert_eq!(whip.status, 403);
    assert_eq!(whip.json()["error"], "no_consent");
}

#[tokio::test]
async fn media_offers_are_validated() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, keys, _tech, mut customer) = consented_session(&app, &mut admin).await;
    let mut client = app.client();
    let wrong_type = client
        .request(
            "POST",
            "/api/invitation/whip",
            &keys.headers(&[("content-type", "text/plain")]),
            b"v=0".to_vec(),
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    let garbage = client
        .request(
            "POST",
            "/api/invitation/whip",
            &keys.headers(&[("content-type", "application/sdp")]),
            b"this is not SDP \x01\x02".to_vec(),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["error"], "invalid_sdp");
    assert!(
        app.audit_kinds()
            .contains(&"malformed_media_offer".to_owned())
    );

    let whep_anon = app
        .client()
        .request(
            "POST",
            &format!("/api/sessions/{id}/whep"),
            &[("content-type", "application/sdp")],
            b"v=0".to_vec(),
        )
        .await;
    assert_eq!(whep_anon.status, 401);
    let whep_bad = admin
        .request(
            "POST",
            &format!("/api/sessions/{id}/whep"),
            &[
                ("content-type", "application/sdp"),
                ("x-sightline-csrf", "1"),
            ],
            b"m=video".to_vec(),
        )
        .await;
    assert_eq!(whep_bad.status, 400);
    // The session and the customer's connection are unaffected.
    send(&mut customer, json!({"type": "ping"})).await;
    recv_type(&mut customer, "pong").await;
}

#[tokio::test]
async fn shutdown_tells_every_open_session() {
    let mut app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;
    let mut customer = app.client().websocket().await;
    send(&mut customer, json!({"type": "join", "token": token})).await;
    recv_state(&mut customer, "joined").await;
    app.stop().await;
    assert_eq!(
        recv_type(&mut customer, "ended").await["reason"],
        "shutdown"
    );

    // The ended session was stored before the appliance stopped.
    app.restart().await;
    let mut admin = app.client();
    let login = admin
        .post_json(
            "/api/login",
            &json!({"email": "ada@example.com", "password": "Camera4support"}),
        )
        .await;
    assert_eq!(login.status, 200);
    let session = admin.get(&format!("/api/sessions/{id}")).await.json();
    assert_eq!(session["end_reason"], "shutdown");
}

#[tokio::test]
async fn the_appliance_ca_is_reused_across_restarts_and_downloadable() {
    let mut app = TestAppliance::start().await;
    let first = app.running().ca_pem.clone();
    let served = app.client().get("/ca.pem").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), first);
    app.restart().await;
    assert_eq!(app.running().ca_pem, first);
    // A client that trusts only the first CA still connects to the new server certificate.
    let health = app.client().get("/healthz").await;
    assert_eq!(health.status, 200);
    let page = app.client().get("/").await;
    let csp = page.header("content-security-policy").expect("csp");
    assert!(csp.contains("default-src 'self'"));
    assert!(page.header("strict-transport-security").is_some());
}

/// Runs `openssl` with the arguments; `None` when it is not installed.
fn openssl(args: &[&str], stdin: &[u8]) -> Option<std::process::Output> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(stdin).ok()?;
    child.wait_with_output().ok()
}

#[tokio::test]
async fn the_certificates_pass_a_strict_verifier_and_the_ca_is_constrained_and_short_lived() {
    let app = TestAppliance::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &app.running().ca_pem).expect("ca");
    let connect = app.addr().to_string();
    // The appliance runs on this test's thread: openssl waits elsewhere.
    let shown = tokio::task::spawn_blocking(move || {
        openssl(
            &[
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "localhost",
                "-showcerts",
            ],
            b"",
        )
    })
    .await
    .expect("join");
    // scripts/test-all.sh installs openssl; without it this check cannot be made.
    let shown = shown.expect("openssl is installed (apt-get install openssl)");
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let begin = shown
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = shown[begin..]
        .find("-----END CERTIFICATE-----")
        .expect("end")
        + begin
        + 25;
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &shown[begin..end]).expect("leaf");

    let verified = openssl(
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            ca.to_str().expect("path"),
            leaf.to_str().expect("path"),
        ],
        b"",
    )
    .expect("openssl");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let text = |pem: &std::path::Path| {
        let out = openssl(
            &[
                "x509",
                "-noout",
                "-text",
                "-in",
                pem.to_str().expect("path"),
            ],
            b"",
        )
        .expect("openssl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let leaf_text = text(&leaf);
    assert!(
        leaf_text.contains("Authority Key Identifier"),
        "{leaf_text}"
    );
    let ca_text = text(&ca);
    assert!(ca_text.contains("Name Constraints"), "{ca_text}");
    assert!(ca_text.contains("DNS:localhost"), "{ca_text}");
    // Valid for at most 366 days (Mozilla intermediate), the CA for at most 5 years.
    let valid_for = |pem: &std::path::Path, days: u64| {
        openssl(
            &[
                "x509",
                "-noout",
                "-checkend",
                &(days * 86_400).to_string(),
                "-in",
                pem.to_str().expect("path"),
            ],
            b"",
        )
        .expect("openssl")
        .status
        .success()
    };
    assert!(valid_for(&leaf, 364) && !valid_for(&leaf, 367));
    assert!(valid_for(&ca, 5 * 365 - 2) && !valid_for(&ca, 5 * 366));
    assert!(
        !app.config.data_dir.join("tls/ca-key.pem").exists(),
        "the CA key is sealed in the store, not a file"
    );
}

#[test]
fn an_unknown_config_key_stops_the_binary_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sightline.toml");
    std::fs::write(&path, "[http]\nlisten = \"127.0.0.1:0\"\nlisten_port = 1\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["--config", path.to_str().expect("utf8"), "serve"])
        .output()
        .expect("run sightline");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_port"), "{stderr}");
    assert!(!dir.path().join("sightline-data").exists());
}

#[tokio::test]
async fn chat_lines_are_relayed_stored_and_validated() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, token, _) = create_session(&mut admin).await;
    let (mut tech, mut customer, _) = watch_and_join(&app, &admin, &id, &token).await;
    recv_state(&mut customer, "joined").await;

    send(
        &mut customer,
        json!({"type": "chat", "text": "  The light is blinking red.  "}),
    )
    .await;
    let line = recv_type(&mut tech, "chat").await;
    assert_eq!(line["line"]["from"], "customer");
    assert_eq!(line["line"]["author"], "Customer");
    assert_eq!(line["line"]["text"], "The light is blinking red.");
    send(
        &mut tech,
        json!({"type": "chat", "text": "Thanks, hold it still."}),
    )
    .await;
    // Everyone gets every line, the sender included: skip the customer's own.
    let own = recv_type(&mut customer, "chat").await;
    assert_eq!(own["line"]["from"], "customer");
    let line = recv_type(&mut customer, "chat").await;
    assert_eq!(line["line"]["from"], "technician");
    assert_eq!(line["line"]["author"], "Ada Lovelace");

    for bad in [json!(""), json!("x".repeat(2001)), json!("bell\u{7}")] {
        send(&mut customer, json!({"type": "chat", "text": bad})).await;
        // The same code an API request with unacceptable content gets.
        assert_eq!(
            recv_type(&mut customer, "error").await["code"],
            "bad_request"
        );
    }

    let transcript = admin
        .get(&format!("/api/sessions/{id}/transcript"))
        .await
        .json();
    let texts: Vec<&str> = transcript
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["text"].as_str().expect("text"))
        .collect();
    assert_eq!(
        texts,
        ["The light is blinking red.", "Thanks, hold it still."]
    );

    // A console that (re)connects gets the chat so far.
    let mut again = admin.websocket().await;
    send(&mut again, json!({"type": "watch", "session_id": id})).await;
    let earlier = recv_type(&mut again, "transcript").await;
    assert_eq!(earlier["lines"].as_array().expect("lines").len(), 2);
}

async fn refused_request(app: &TestAppliance, headers: &[(&str, &str)]) {
    let mut other = app.client_from("127.0.0.7");
    let r = other
        .request(
            "GET",
            "/api/invitation/stills/anything",
            headers,
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "wrong_device");
}

/// A second holder of the link that keeps trying is refused every time, and audited once
/// a minute with a count, not once per request.
#[tokio::test]
async fn a_device_that_did_not_join_is_audited_once_a_minute_not_per_request() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (_id, keys, _tech, _customer) = consented_session(&app, &mut admin).await;
    let bearer = format!("Bearer {}", keys.token);
    let wrong = [
        ("authorization", bearer.as_str()),
        ("x-sightline-device", "not-the-device-that-joined"),
    ];
    let refused = |app: &TestAppliance| {
        app.running()
            .audit_entries()
            .expect("audit")
            .into_iter()
            .filter(|e| serde_json::to_value(&e.kind).expect("kind") == "invitation_device_refused")
            .map(|e| e.detail)
            .collect::<Vec<_>>()
    };
    for _ in 0..20 {
        refused_request(&app, &wrong).await;
    }
    assert_eq!(refused(&app).len(), 1, "one entry for the first minute");
    app.clock.advance_secs(61);
    refused_request(&app, &wrong).await;
    let details = refused(&app);
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(details[1].contains("19 more refused"), "{details:?}");
}

#[tokio::test]
async fn the_device_that_joined_rejoins_but_another_holder_of_the_link_cannot_take_over() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, keys, mut tech, first) = consented_session(&app, &mut admin).await;

    // The customer's page publishes its camera.
    let mut media = PageMedia::new();
    let offer = media.offer.clone();
    let sdp = keys.headers(&[("content-type", "application/sdp")]);
    let published = app
        .client()
        .request(
            "POST",
            "/api/invitation/whip",
            &sdp,
            offer.clone().into_bytes(),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.text());
    let resource = published.header("location").expect("location");
    media.accept(&published.text());

    // (a) Someone else with the link, while the customer is connected: no media, no
    // stills, no goodbye on the customer's behalf — and the attempt is logged.
    let bearer = format!("Bearer {}", keys.token);
    for device in [None, Some("0".repeat(43))] {
        let mut headers = vec![
            ("authorization", bearer.as_str()),
            ("content-type", "application/sdp"),
        ];
        if let Some(d) = &device {
            headers.push(("x-sightline-device", d));
        }
        for (method, path) in [
            ("POST", "/api/invitation/whip"),
            ("PATCH", resource.as_str()),
            ("DELETE", resource.as_str()),
            ("GET", "/api/invitation/stills/anything"),
            ("POST", "/api/invitation/stills/anything"),
        ] {
            let r = app
                .client_from("127.0.0.7")
                .request(method, path, &headers, offer.clone().into_bytes())
                .await;
            assert_eq!(
                r.status,
                403,
                "{method} {path} with {device:?}: {}",
                r.text()
            );
            assert_eq!(r.json()["error"], "wrong_device", "{method} {path}");
        }
    }
    assert!(
        app.audit_kinds()
            .contains(&"invitation_device_refused".to_owned())
    );
    let mut other = app.client().websocket().await;
    assert_eq!(
        join(&mut other, &keys.token, None).await["code"],
        "already_joined"
    );
    // The customer's connection is still theirs: an ICE restart of it is answered.
    let restart = media.restart();
    let restarted = app
        .client()
        .request("PATCH", &resource, &sdp, restart.into_bytes())
        .await;
    assert_eq!(restarted.status, 200, "{}", restarted.text());
    media.accept(&restarted.text());

    // The same device after a reload takes its place under the consent it gave.
    let mut reloaded = app.client().websocket().await;
    let state = join(&mut reloaded, &keys.token, Some(&keys.device)).await;
    assert_eq!(state["type"], "state", "no new device secret: {state}");
    assert_eq!(state["session"]["state"], "consented");
    assert_eq!(state["session"]["consent"]["camera"], true);
    assert_eq!(state["session"]["customer_devices"], 1);
    drop(first);

    // (b) The customer's socket drops; another device joins with the link. It is a new
    // participant: nothing carries over, and the technician sees a second device.
    drop(reloaded);
    loop {
        let state = recv_type(&mut tech, "state").await;
        if state["session"]["customer_connected"] == false {
            break;
        }
    }
    let mut intruder = app.client().websocket().await;
    let device = join(&mut intruder, &keys.token, None).await;
    assert_eq!(device["type"], "device");
    let newcomer = keys_of(&keys.token, &device);
    assert_ne!(newcomer.device, keys.device);
    let seen = recv_state(&mut tech, "joined").await;
    assert_eq!(seen["session"]["consent"], serde_json::Value::Null);
    assert_eq!(seen["session"]["customer_devices"], 2);
    let record = admin
        .get(&format!("/api/sessions/{id}/record"))
        .await
        .json();
    let events: Vec<&str> = record["consent_log"]
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(events, ["granted", "resumed", "new_device"]);
    assert!(
        app.audit_kinds()
            .contains(&"customer_device_changed".to_owned())
    );
    // The first device's media ended with its place; the newcomer must consent first.
    let restart = media.restart();
    let gone = app
        .client()
        .request("PATCH", &resource, &sdp, restart.into_bytes())
        .await;
    assert_eq!(gone.status, 403, "the old device's secret is void");
    let unconsented = app
        .client()
        .request(
            "POST",
            "/api/invitation/whip",
            &newcomer.headers(&[("content-type", "application/sdp")]),
            offer.into_bytes(),
        )
        .await;
    assert_eq!(unconsented.json()["error"], "no_consent");
}

#[tokio::test]
async fn the_ice_tcp_candidate_announces_the_configured_public_port() {
    let app = TestAppliance::start_with(|c| c.media.public_tcp_port = Some(443)).await;
    let mut admin = app.set_up().await;
    let (_, keys, _tech, _customer) = consented_session(&app, &mut admin).await;
    let media = PageMedia::new();
    let answer = app
        .client()
        .request(
            "POST",
            "/api/invitation/whip",
            &keys.headers(&[("content-type", "application/sdp")]),
            media.offer.clone().into_bytes(),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let tcp: Vec<String> = answer
        .text()
        .lines()
        .filter(|l| l.starts_with("a=candidate") && l.contains(" tcp "))
        .map(str::to_owned)
        .collect();
    assert!(!tcp.is_empty(), "an ICE-TCP candidate");
    for line in tcp {
        assert!(line.contains(" 443 typ host"), "{line}");
    }
}

#[tokio::test]
async fn who_is_muted_is_told_to_whoever_joins_later() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (id, _keys, _tech, mut customer) = consented_session(&app, &mut admin).await;
    send(&mut customer, json!({"type": "mute", "muted": true})).await;
    recv_type(&mut customer, "muted").await;
    let mut late = admin.websocket().await;
    send(&mut late, json!({"type": "watch", "session_id": id})).await;
    let muted = recv_type(&mut late, "muted").await;
    assert_eq!(muted["from"], "customer");
    assert_eq!(muted["muted"], true);
    send(&mut customer, json!({"type": "mute", "muted": false})).await;
    assert_eq!(recv_type(&mut late, "muted").await["muted"], false);
    let mut later = admin.websocket().await;
    send(&mut later, json!({"type": "watch", "session_id": id})).await;
    recv_type(&mut later, "state").await;
    send(&mut later, json!({"type": "ping"})).await;
    loop {
        let m = recv(&mut later).await.expect("message");
        assert_ne!(m["type"], "muted", "nobody is muted any more");
        if m["type"] == "pong" {
            break;
        }
    }
}

#[tokio::test]
async fn session_history_filters_and_exports_csv() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (ended, _, _) = create_session(&mut admin).await;
    admin
        .post_empty(&format!("/api/sessions/{ended}/end"))
        .await;
    let r = admin
        .json(
            "POST",
            "/api/sessions",
            &json!({"customer_reference": "=HYPERLINK(\"x\")"}),
        )
        .await;
    let waiting = r.json()["session"]["id"].as_str().expect("id").to_owned();

    let only_ended = admin.get("/api/sessions?state=ended").await.json();
    assert_eq!(only_ended.as_array().expect("list").len(), 1);
    assert_eq!(only_ended[0]["id"], ended.as_str());
    let later = admin
        .get(&format!("/api/sessions?since_ms={}", START_MS + 1))
        .await
        .json();
    assert_eq!(later, json!([]));
    assert_eq!(admin.get("/api/sessions?state=bogus").await.status, 400);

    let csv = admin.get("/api/sessions.csv").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.header("content-type")
            .expect("type")
            .starts_with("text/csv")
    );
    let text = csv.text();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .expect("header")
            .starts_with("session_id,created,technician")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2);
    // Every timestamp has one shape, to the millisecond, whatever its value.
    for row in &rows {
        let created = row.split(',').nth(1).expect("created column");
        assert_eq!(created.len(), "2027-01-15T08:00:00.000Z".len(), "{created}");
        assert!(
            created.ends_with('Z') && created.as_bytes()[19] == b'.',
            "{created}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&ended) && r.contains(",ended,technician,"))
    );
    let formula = rows
        .iter()
        .find(|r| r.starts_with(&waiting))
        .expect("waiting row");
    assert!(
        formula.contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "formula defused and quoted: {formula}"
    );
}

// On several runtime threads, as the appliance runs: a guess that waits for the store
// lets the others run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_guesses_sent_all_at_once_are_throttled_like_guesses_in_a_row() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let (_, _, pin) = create_session(&mut admin).await;
    let wrong_pin = if pin == "000000" { "000001" } else { "000000" };
    let guesses = (0..16).map(|_| {
        let mut guesser = app.client_from("127.0.0.9");
        async move {
            guesser
                .post_json("/api/join/pin", &json!({"pin": wrong_pin}))
                .await
                .status
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let wrong = statuses.iter().filter(|s| **s == 403).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (wrong, refused),
        (10, 6),
        "ten guesses a minute, however they arrive: {statuses:?}"
    );
}

#[tokio::test]
async fn the_signaling_socket_opens_for_the_appliances_own_pages_only() {
    let app = TestAppliance::start().await;
    let admin = app.set_up().await;
    let own = format!("https://127.0.0.1:{}", app.addr().port());
    let mut ws = admin
        .websocket_from_origin(&own)
        .await
        .expect("the console's own origin is let in");
    send(&mut ws, json!({"type": "ping"})).await;
    assert!(recv(&mut ws).await.is_some());
    let refused = admin
        .websocket_from_origin("https://evil.example")
        .await
        .expect_err("another site's page is refused");
    assert_eq!(refused, 403);
    let entries = app.running().audit_entries().expect("audit");
    assert!(
        entries
            .iter()
            .any(|e| e.detail.contains("another origin") && e.detail.contains("evil.example")),
        "the attempt is audited"
    );
}
