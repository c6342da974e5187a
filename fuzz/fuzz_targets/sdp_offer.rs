//! SDP offers as the WHIP (customer) and WHEP (technician) handlers receive them, first
//! offers and ICE-restart PATCHes, through the real router to the relay: never a server
//! error, every refusal typed JSON. The first byte says which request; the rest is the
//! body.

#![no_main]

use std::sync::{Mutex, OnceLock};

use axum::http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use sightline_fuzz::{Appliance, check_answer};

struct State {
    app: Appliance,
    /// The resource of the last media connection each side made (`Location`).
    whip: Option<String>,
    whep: Option<String>,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let state = STATE.get_or_init(|| {
        Mutex::new(State {
            app: Appliance::start(),
            whip: None,
            whep: None,
        })
    });
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let session = state.app.session.as_ref().expect("a session").id.clone();
    let whep = format!("/api/sessions/{session}/whep");
    let (what, answer) = match which % 4 {
        0 => (
            "WHIP offer",
            state.app.as_customer(
                Method::POST,
                "/api/invitation/whip",
                "application/sdp",
                body.to_vec(),
            ),
        ),
        1 => (
            "WHEP offer",
            state
                .app
                .as_admin(Method::POST, &whep, "application/sdp", body.to_vec()),
        ),
        2 => {
            let Some(at) = state.whip.clone() else { return };
            (
                "WHIP restart",
                state
                    .app
                    .as_customer(Method::PATCH, &at, "application/sdp", body.to_vec()),
            )
        }
        _ => {
            let Some(at) = state.whep.clone() else { return };
            (
                "WHEP restart",
                state
                    .app
                    .as_admin(Method::PATCH, &at, "application/sdp", body.to_vec()),
            )
        }
    };
    check_answer(what, &answer);
    state.app.assert_documented();
    if answer.status == StatusCode::CREATED {
        let location = answer
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a created connection has a Location")
            .to_owned();
        if which % 4 == 0 {
            state.whip = Some(location);
        } else {
            state.whep = Some(location);
        }
    }
});
