//! What a stranger can try instead of an invitation: a token as the customer page's
//! `Authorization: Bearer`, the same as the first WebSocket message (`join`), and a PIN
//! on the join page. Never a server error, refusals typed, and nothing but the real
//! token or PIN opens the session.

#![no_main]

use std::sync::{Mutex, OnceLock};

use axum::http::{HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sightline_fuzz::{Appliance, check_answer, source};

static STATE: OnceLock<Mutex<Appliance>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(guess) = std::str::from_utf8(data) else {
        return;
    };
    let state = STATE.get_or_init(|| Mutex::new(Appliance::start()));
    let app = state.lock().unwrap_or_else(|e| e.into_inner());
    let session = app.session.as_ref().expect("a session");
    let (token, pin) = (session.token.clone(), session.pin.clone());
    // Spread over many addresses, so that the guessing throttle does not answer for the
    // code behind it; it has its own tests.
    let from = source(u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.len() as u8,
    ]));

    // Only a value hyper would deliver as a header.
    let bearer = format!("Bearer {guess}");
    if HeaderValue::from_str(&bearer).is_ok() {
        let answer = app.request(
            Method::GET,
            "/api/invitation",
            &[("authorization", bearer.as_str())],
            Vec::new(),
            from,
        );
        check_answer("GET /api/invitation", &answer);
        assert!(
            answer.status != StatusCode::OK || guess == token,
            "a guessed token opened the session"
        );
    }

    let live = app.running().api().live.clone();
    match live.attach_customer(guess, Some(guess), Some(guess), from) {
        Ok((attachment, _)) => {
            assert_eq!(guess, token, "a guessed token joined the session");
            live.detach(&attachment);
        }
        Err(e) => assert_ne!(e.code(), sightline::live::ErrorCode::Internal, "{e}"),
    }

    let answer = app.request(
        Method::POST,
        "/api/join/pin",
        &[("content-type", "application/json")],
        json!({ "pin": guess }).to_string().into_bytes(),
        from,
    );
    check_answer("POST /api/join/pin", &answer);
    app.assert_documented();
    assert!(
        answer.status != StatusCode::OK || guess.trim() == pin,
        "a guessed PIN opened the session"
    );
});
