//! Every JSON request body of the API, sent to its route through the real router as the
//! console, the customer's page or a stranger would send it: never a server error, every
//! refusal typed JSON. The first byte picks the route; the rest is the body.

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use sightline::api::Access;
use sightline_fuzz::{Appliance, body_routes, check_answer, source};

static STATE: OnceLock<Mutex<(Appliance, u64)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let routes = body_routes();
    let route = &routes[usize::from(pick) % routes.len()];
    let state = STATE.get_or_init(|| Mutex::new((Appliance::start(), 0)));
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let (app, runs) = &mut *state;
    *runs += 1;
    // A fuzzed body may change the account's policy or the admin's credentials so that
    // every later request stops at the access check: start afresh then.
    if *runs % 64 == 0 && !app.admin_signed_in() {
        *app = Appliance::start();
    }
    let path = app.path_of(route);
    let method = route.method.clone();
    let answer = match route.access {
        // From many addresses: the appliance's clock stands still here, so one address
        // would stay throttled after a few wrong guesses and hide the code behind it.
        Access::Public => app.request(
            method.clone(),
            &path,
            &[("content-type", "application/json")],
            body.to_vec(),
            source(
                2 + u16::from_le_bytes([
                    body.first().copied().unwrap_or(0),
                    body.last().copied().unwrap_or(0),
                ]) % 4096,
            ),
        ),
        Access::Invitation => {
            app.as_customer(method.clone(), &path, "application/json", body.to_vec())
        }
        _ => app.as_admin(method.clone(), &path, "application/json", body.to_vec()),
    };
    check_answer(&format!("{method} {path}"), &answer);
    app.assert_documented();
});
