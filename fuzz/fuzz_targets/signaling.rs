//! Signaling messages as a WebSocket text frame carries them, parsed as the socket task
//! parses them and handled by the live session for the technician or the customer (the
//! first byte says which): no panic, no internal error, and what the room sends back is
//! JSON.

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use sightline::live::{ClientMessage, ErrorCode, ServerMessage};
use sightline_fuzz::Appliance;

static STATE: OnceLock<Mutex<Appliance>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&who, frame)) = data.split_first() else {
        return;
    };
    // A text frame is UTF-8; the WebSocket layer refuses anything else.
    let Ok(text) = std::str::from_utf8(frame) else {
        return;
    };
    let Ok(message) = serde_json::from_str::<ClientMessage>(text) else {
        return;
    };
    let state = STATE.get_or_init(|| Mutex::new(Appliance::start()));
    let mut app = state.lock().unwrap_or_else(|e| e.into_inner());
    let live = app.running().api().live.clone();
    let session = app.session.as_ref().expect("a session");
    let from = if who & 1 == 0 {
        &session.technician
    } else {
        &session.customer
    };
    let mut ended = false;
    match app.rt.block_on(live.handle(&from.attachment, message)) {
        Ok(reply) => {
            if let Some(reply) = reply {
                serde_json::to_string(&reply).expect("the reply is JSON");
            }
        }
        Err(e) => {
            assert_ne!(e.code(), ErrorCode::Internal, "{e}");
            ended = e.code() == ErrorCode::Ended;
        }
    }
    let session = app.session.as_mut().expect("a session");
    for message in session
        .technician
        .drain()
        .into_iter()
        .chain(session.customer.drain())
    {
        serde_json::to_string(&message).expect("what the room sends is JSON");
        ended |= matches!(message, ServerMessage::Ended { .. });
    }
    if ended {
        app.new_session();
    }
});
