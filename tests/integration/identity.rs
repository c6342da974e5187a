//! Technician identity through the real API: lockout, two-factor sign-in, login session
//! timeouts, password changes, administration, and the access rule of every route.

use crate::common::*;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("ada@example.com", "Camera4support");

#[tokio::test]
async fn lockout_starts_at_the_fifth_failure_and_ends_after_exactly_five_minutes() {
    let mut app = TestAppliance::start().await;
    app.set_up().await;
    for _ in 0..3 {
        assert_eq!(try_login(&app, ADMIN.0, "Wrong4pass").await.status, 401);
    }
    // Counters survive a restart.
    app.restart().await;
    assert_eq!(try_login(&app, ADMIN.0, "Wrong4pass").await.status, 401);
    let fifth = try_login(&app, ADMIN.0, "Wrong4pass").await;
    assert_eq!(fifth.status, 423, "{}", fifth.text());
    let until = fifth.json()["locked_until_ms"].as_u64().expect("until");
    assert_eq!(until, START_MS + 5 * 60_000);

    // Even the right password is refused until the lockout ends, to the millisecond.
    assert_eq!(try_login(&app, ADMIN.0, ADMIN.1).await.status, 423);
    app.clock.advance_secs(299);
    assert_eq!(try_login(&app, ADMIN.0, ADMIN.1).await.status, 423);
    app.clock.advance_secs(1);
    assert_eq!(try_login(&app, ADMIN.0, ADMIN.1).await.status, 200);
    let kinds = app.audit_kinds();
    assert!(kinds.contains(&"login_locked".to_owned()));
    assert!(kinds.contains(&"lockout_ended".to_owned()));
}

#[tokio::test]
async fn a_success_resets_the_count_and_unknown_emails_lock_the_same_way() {
    let app = TestAppliance::start().await;
    app.set_up().await;
    for _ in 0..4 {
        assert_eq!(try_login(&app, ADMIN.0, "Wrong4pass").await.status, 401);
    }
    assert_eq!(try_login(&app, ADMIN.0, ADMIN.1).await.status, 200);
    for _ in 0..4 {
        assert_eq!(try_login(&app, ADMIN.0, "Wrong4pass").await.status, 401);
    }
    let mut unknown = Vec::new();
    for _ in 0..5 {
        unknown.push(try_login(&app, "nobody@example.com", "Wrong4pass").await);
    }
    assert!(unknown[..4].iter().all(|r| r.status == 401));
    assert_eq!(
        unknown[4].status, 423,
        "unknown emails lock out like real ones"
    );
}

#[tokio::test]
async fn an_admin_can_unlock_a_locked_technician() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let id = create_technician(&mut admin, "tess@example.com", vec![]).await;
    for _ in 0..5 {
        try_login(&app, "tess@example.com", "Wrong4pass").await;
    }
    let user = admin.get(&format!("/api/users/{id}")).await.json();
    assert!(user["locked_until_ms"].as_u64().is_some());
    let unlocked = admin
        .json("POST", &format!("/api/users/{id}/unlock"), &json!({}))
        .await;
    assert_eq!(unlocked.status, 204);
    assert_eq!(
        try_login(&app, "tess@example.com", TECH_PASSWORD)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_group_requiring_two_factor_makes_members_enrol_and_then_use_it() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let group_id = create_group(&mut admin, "Field", json!({"require_2fa": true})).await;
    let tech_id = create_technician(&mut admin, "tess@example.com", vec![group_id]).await;

    let (mut tess, stage) = login(&app, "tess@example.com", TECH_PASSWORD).await;
    assert_eq!(stage, "change_password");
    let changed = tess
        .json(
            "POST",
            "/api/me/password",
            &json!({"current": TECH_PASSWORD, "new": "Orchid lantern 93 quay"}),
        )
        .await;
    assert_eq!(changed.json()["stage"], "enrol_two_factor");
    let blocked = tess.get("/api/sessions").await;
    assert_eq!(blocked.status, 403);
    assert_eq!(blocked.json()["error"], "sign_in_incomplete");

    let enrolment = tess.json("POST", "/api/me/totp", &json!({})).await.json();
    let secret = enrolment["secret"].as_str().expect("secret").to_owned();
    assert!(
        enrolment["otpauth_uri"]
            .as_str()
            .expect("uri")
            .starts_with("otpauth://totp/")
    );
    assert!(
        enrolment["qr_svg"]
            .as_str()
            .expect("qr")
            .starts_with("data:image/svg+xml")
    );
    let now = START_MS / 1000;
    let wrong = tess
        .json("POST", "/api/me/totp/confirm", &json!({"code": "000000"}))
        .await;
    assert_eq!(wrong.status, 401);
    let code = totp_code(&secret, now);
    let confirmed = tess
        .json("POST", "/api/me/totp/confirm", &json!({"code": code}))
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    let confirmed = confirmed.json();
    assert_eq!(confirmed["user"]["stage"], "complete");
    let recovery: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("str").to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(tess.get("/api/sessions").await.status, 200);

    // Next sign-in asks for a code; the code already used is refused (replay).
    let (mut again, stage) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    assert_eq!(stage, "second_factor");
    let replay = again
        .json("POST", "/api/login/second-factor", &json!({"code": code}))
        .await;
    assert_eq!(replay.status, 401);
    app.clock.advance_secs(30);
    let fresh = totp_code(&secret, now + 30);
    let ok = again
        .json("POST", "/api/login/second-factor", &json!({"code": fresh}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["stage"], "complete");
    assert_eq!(again.get("/api/sessions").await.status, 200);

    // A recovery code works once.
    let (mut third, _) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    let used = third
        .json(
            "POST",
            "/api/login/second-factor",
            &json!({"code": recovery[0]}),
        )
        .await;
    assert_eq!(used.status, 200);
    let (mut fourth, _) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    let reused = fourth
        .json(
            "POST",
            "/api/login/second-factor",
            &json!({"code": recovery[0]}),
        )
        .await;
    assert_eq!(reused.status, 401);

    // An admin reset of 2FA ends the technician's sign-ins and requires enrolment again.
    let reset = admin
        .json(
            "POST",
            &format!("/api/users/{tech_id}/reset-2fa"),
            &json!({}),
        )
        .await;
    assert_eq!(reset.status, 204);
    assert_eq!(again.get("/api/me").await.status, 401);
    let (_, stage) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    assert_eq!(stage, "enrol_two_factor");
    let kinds = app.audit_kinds();
    for kind in [
        "two_factor_enrolled",
        "recovery_code_used",
        "two_factor_reset",
        "second_factor_failed",
    ] {
        assert!(kinds.contains(&kind.to_owned()), "{kind}");
    }
}

#[tokio::test]
async fn login_sessions_end_after_the_idle_and_absolute_timeouts() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    // Absolute: active every 20 minutes, still ended at 12 hours.
    for _ in 0..35 {
        app.clock.advance_secs(20 * 60);
        assert_eq!(admin.get("/api/me").await.status, 200);
    }
    app.clock.advance_secs(20 * 60);
    assert_eq!(admin.get("/api/me").await.status, 401, "absolute timeout");

    // Idle timeout is configurable per account.
    let (mut admin, _) = login(&app, ADMIN.0, ADMIN.1).await;
    let changed = admin
        .json(
            "PATCH",
            "/api/account",
            &json!({"policy": {"password_min_length": 12, "idle_timeout_mins": 10,
                               "absolute_timeout_hours": 8}}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    app.clock.advance_secs(9 * 60);
    assert_eq!(admin.get("/api/me").await.status, 200);
    app.clock.advance_secs(10 * 60);
    assert_eq!(admin.get("/api/me").await.status, 401, "idle timeout");
}

#[tokio::test]
async fn password_policy_applies_on_create_and_change() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    // One rule, as documented: at least 8 characters with letters and digits, not common,
    // not built from the user's own details.
    for (password, code) in [
        ("short1", "password_too_short"),
        ("Password123", "password_too_common"),
        ("nodigitshere", "password_letters_and_digits"),
        ("lovelace1815", "password_own_details"),
        ("adalovelace1990", "password_own_details"),
        ("Lovelace1990", "password_own_details"),
        ("ada.king2024", "password_own_details"),
    ] {
        let r = admin
            .json(
                "POST",
                "/api/users",
                &json!({"email": "ada.king@example.com", "display_name": "Ada Lovelace",
                        "role": "technician", "password": password}),
            )
            .await;
        assert_eq!(r.status, 422, "{password}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{password}");
    }
    let short = admin
        .json(
            "POST",
            "/api/users",
            &json!({"email": "y@example.com", "display_name": "Y", "role": "technician",
                    "password": "short1"}),
        )
        .await;
    assert_eq!(short.json()["min_length"], 8);
    // A random password of exactly the floor's length is enough.
    for (n, password) in ["k7Qm2xPa", "9fTz4wLr", "b3N8vJq1"].into_iter().enumerate() {
        let r = admin
            .json(
                "POST",
                "/api/users",
                &json!({"email": format!("random{n}@example.com"), "display_name": "R",
                        "role": "technician", "password": password}),
            )
            .await;
        assert_eq!(r.status, 201, "{password}: {}", r.text());
    }
    let long = "Correct-Horse-Battery-Staple-7-Tangerine-Kettle-Drift-Orchid-Qux".to_owned();
    assert_eq!(long.len(), 64);
    let r = admin
        .json(
            "POST",
            "/api/users",
            &json!({"email": "x@example.com", "display_name": "X", "role": "technician",
                    "password": long}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // The admin raises the minimum length; a 14-character password is then refused.
    admin
        .json(
            "PATCH",
            "/api/account",
            &json!({"policy": {"password_min_length": 16}}),
        )
        .await;
    let r = admin
        .json(
            "POST",
            "/api/me/password",
            &json!({"current": ADMIN.1, "new": "Orchid93lantern"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("16"));
    let lowered = admin
        .json(
            "PATCH",
            "/api/account",
            &json!({"policy": {"password_min_length": 6}}),
        )
        .await;
    assert_eq!(lowered.status, 422, "the floor cannot be lowered");

    // Passwords never reach the audit log.
    for entry in app.running().audit_entries().expect("audit") {
        assert!(!entry.detail.contains("Orchid93lantern"));
        assert!(!entry.detail.contains(&long));
    }
}

#[tokio::test]
async fn changing_a_password_needs_the_current_one_and_ends_other_sign_ins() {
    let app = TestAppliance::start().await;
    app.set_up().await;
    let (mut laptop, _) = login(&app, ADMIN.0, ADMIN.1).await;
    let (mut phone, _) = login(&app, ADMIN.0, ADMIN.1).await;
    let wrong = laptop
        .json(
            "POST",
            "/api/me/password",
            &json!({"current": "Nope1234x", "new": "Orchid lantern 93 quay"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let ok = laptop
        .json(
            "POST",
            "/api/me/password",
            &json!({"current": ADMIN.1, "new": "Orchid lantern 93 quay"}),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        laptop.get("/api/me").await.status,
        200,
        "the changing browser stays in"
    );
    assert_eq!(phone.get("/api/me").await.status, 401, "other sign-ins end");
    assert_eq!(try_login(&app, ADMIN.0, ADMIN.1).await.status, 401);
}

#[tokio::test]
async fn sign_out_everywhere_role_change_and_deletion_end_sign_ins() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let id = create_technician(&mut admin, "tess@example.com", vec![]).await;
    let mut tess = first_login(&app, "tess@example.com").await;
    let (mut tess2, _) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    let out = tess
        .json("POST", "/api/logout/everywhere", &json!({}))
        .await;
    assert_eq!(out.status, 204);
    assert_eq!(tess2.get("/api/me").await.status, 401);

    let (mut tess, _) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    assert_eq!(
        tess.get("/api/users").await.status,
        403,
        "technicians cannot administer"
    );
    let promoted = admin
        .json(
            "PATCH",
            &format!("/api/users/{id}"),
            &json!({"role": "account_admin"}),
        )
        .await;
    assert_eq!(promoted.status, 200);
    assert_eq!(
        tess.get("/api/me").await.status,
        401,
        "role change ends sign-ins"
    );

    let (mut tess, _) = login(&app, "tess@example.com", "Orchid lantern 93 quay").await;
    assert_eq!(tess.get("/api/users").await.status, 200);
    let deleted = admin
        .request(
            "DELETE",
            &format!("/api/users/{id}"),
            &[("x-sightline-csrf", "1")],
            vec![],
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(tess.get("/api/me").await.status, 401);
    assert_eq!(
        try_login(&app, "tess@example.com", "Orchid lantern 93 quay")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn technicians_see_their_own_sessions_unless_their_group_shares_history() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let gid = create_group(&mut admin, "Desk", json!({"see_group_history": false})).await;
    create_technician(&mut admin, "one@example.com", vec![gid.clone()]).await;
    create_technician(&mut admin, "two@example.com", vec![gid.clone()]).await;
    let mut one = first_login(&app, "one@example.com").await;
    let mut two = first_login(&app, "two@example.com").await;
    let (id, _, _) = create_session(&mut one).await;
    assert_eq!(two.get(&format!("/api/sessions/{id}")).await.status, 404);
    assert_eq!(two.get("/api/sessions").await.json(), json!([]));
    assert_eq!(admin.get(&format!("/api/sessions/{id}")).await.status, 200);

    admin
        .json(
            "PATCH",
            &format!("/api/groups/{gid}"),
            &json!({"see_group_history": true}),
        )
        .await;
    // The setting applies from the next request (the principal is resolved per request).
    assert_eq!(two.get(&format!("/api/sessions/{id}")).await.status, 200);
}

#[tokio::test]
async fn seats_limit_the_number_of_active_users() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    change_account(
        &mut admin,
        json!({"subscription": {"seats": 2, "ends_ms": null}}),
    )
    .await;
    create_technician(&mut admin, "one@example.com", vec![]).await;
    let full = admin
        .json(
            "POST",
            "/api/users",
            &json!({"email": "two@example.com", "display_name": "Two", "role": "technician",
                    "password": TECH_PASSWORD}),
        )
        .await;
    assert_eq!(full.status, 409, "{}", full.text());
}

#[tokio::test]
async fn the_identity_audit_log_is_filterable() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    try_login(&app, ADMIN.0, "Wrong4pass").await;
    let all = admin.get("/api/audit").await;
    assert_eq!(all.status, 200);
    let seqs: Vec<u64> = all
        .json()
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(
        seqs.len() >= 2,
        "setup and a failed login at least: {seqs:?}"
    );
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let failed = admin.get("/api/audit?kind=login_failed").await.json();
    let failed = failed.as_array().expect("array");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["kind"], "login_failed");
    let later = admin
        .get(&format!("/api/audit?since_ms={}", START_MS + 1))
        .await
        .json();
    assert_eq!(later, json!([]));
    assert_eq!(admin.get("/api/audit?bogus=1").await.status, 400);
}

#[tokio::test]
async fn the_offline_cli_manages_users_and_refuses_a_running_appliance() {
    let mut app = TestAppliance::start().await;
    app.set_up().await;
    let data_dir = app.config.data_dir.clone();
    let busy = sightline_at(&data_dir, &["admin", "user", "list"]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("running appliance"));

    app.stop().await;
    let listed = sightline_at(&data_dir, &["admin", "user", "list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ada@example.com"));
    let (_, temporary) = create_account_offline(&data_dir, "Other Org", "bob@other.example");
    app.restart().await;
    let (_, stage) = login(&app, "bob@other.example", &temporary).await;
    assert_eq!(stage, "change_password");
}

/// The access every route must have. A route added to the appliance but not here fails
/// `every_route_enforces_its_access_for_every_role`.
fn expected_access() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("GET", "/api/setup", "public"),
        ("POST", "/api/setup", "public"),
        ("POST", "/api/login", "public"),
        ("POST", "/api/join/pin", "public"),
        ("GET", "/api/openapi.json", "public"),
        ("GET", "/api/ws", "public"),
        ("GET", "/api/me", "signing_in"),
        ("POST", "/api/logout", "signing_in"),
        ("POST", "/api/login/second-factor", "signing_in"),
        ("POST", "/api/me/password", "signing_in"),
        ("POST", "/api/me/totp", "signing_in"),
        ("POST", "/api/me/totp/confirm", "signing_in"),
        ("POST", "/api/logout/everywhere", "technician"),
        ("GET", "/api/sessions", "technician"),
        ("POST", "/api/sessions", "technician"),
        ("GET", "/api/sessions.csv", "technician"),
        ("GET", "/api/sessions/{id}", "technician"),
        ("POST", "/api/sessions/{id}/invitations", "technician"),
        ("POST", "/api/sessions/{id}/end", "technician"),
        ("GET", "/api/sessions/{id}/transcript", "technician"),
        ("GET", "/api/sessions/{id}/record", "technician"),
        ("GET", "/api/sessions/{id}/stills/{still}", "technician"),
        (
            "GET",
            "/api/sessions/{id}/recordings/{recording}",
            "technician",
        ),
        ("POST", "/api/sessions/{id}/colleagues", "technician"),
        (
            "DELETE",
            "/api/sessions/{id}/colleagues/{user_id}",
            "technician",
        ),
        ("GET", "/api/reports", "technician"),
        ("GET", "/api/reports.csv", "technician"),
        ("GET", "/api/colleagues", "technician"),
        ("POST", "/api/sessions/{id}/whep", "technician"),
        ("PATCH", "/api/sessions/{id}/whep/{peer}", "technician"),
        ("DELETE", "/api/sessions/{id}/whep/{peer}", "technician"),
        ("GET", "/api/invitation", "invitation"),
        ("POST", "/api/invitation/whip", "invitation"),
        ("PATCH", "/api/invitation/whip/{peer}", "invitation"),
        ("DELETE", "/api/invitation/whip/{peer}", "invitation"),
        ("POST", "/api/invitation/stills/{id}", "invitation"),
        ("GET", "/api/invitation/stills/{id}", "invitation"),
        ("GET", "/api/users", "admin"),
        ("POST", "/api/users", "admin"),
        ("GET", "/api/users/{user_id}", "admin"),
        ("PATCH", "/api/users/{user_id}", "admin"),
        ("DELETE", "/api/users/{user_id}", "admin"),
        ("POST", "/api/users/{user_id}/unlock", "admin"),
        ("POST", "/api/users/{user_id}/reset-password", "admin"),
        ("POST", "/api/users/{user_id}/reset-2fa", "admin"),
        ("GET", "/api/groups", "admin"),
        ("POST", "/api/groups", "admin"),
        ("PATCH", "/api/groups/{group_id}", "admin"),
        ("DELETE", "/api/groups/{group_id}", "admin"),
        ("GET", "/api/account", "admin"),
        ("PATCH", "/api/account", "admin"),
        ("GET", "/api/certificate", "admin"),
        ("GET", "/api/audit", "admin"),
        ("GET", "/api/export", "admin"),
        ("GET", "/api/deletions", "admin"),
        ("POST", "/api/deletions", "admin"),
        ("DELETE", "/api/sessions/{id}", "admin"),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    Customer,
    Technician,
    OtherAccountAdmin,
    Admin,
}

#[tokio::test]
async fn every_route_enforces_its_access_for_every_role() {
    use sightline::api::Access;

    let mut app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let group = admin
        .json("POST", "/api/groups", &json!({"name": "Field"}))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let tech_id = create_technician(&mut admin, "tess@example.com", vec![group.clone()]).await;
    let mut tess = first_login(&app, "tess@example.com").await;
    let (session_id, token, _) = create_session(&mut tess).await;

    // A second account, made by the operator's CLI on the stopped appliance.
    let data_dir = app.config.data_dir.clone();
    app.stop().await;
    let (_, temporary) = create_account_offline(&data_dir, "Other Org", "bob@other.example");
    app.restart().await;
    let (mut bob, _) = login(&app, "bob@other.example", &temporary).await;
    let r = bob
        .json(
            "POST",
            "/api/me/password",
            &json!({"current": temporary, "new": "Walrus ledger 58 pine"}),
        )
        .await;
    assert_eq!(r.status, 200);

    // The customer's page joins, so it holds the device secret its later requests carry.
    let mut page = app.client().websocket().await;
    let customer = keys_of(&token, &join(&mut page, &token, None).await);

    // The table in the appliance and the expectations here must match exactly.
    let routes = sightline::api::routes();
    let declared: Vec<(String, String, &str)> = routes
        .iter()
        .map(|r| {
            let access = match r.access {
                Access::Public => "public",
                Access::Invitation => "invitation",
                Access::SigningIn => "signing_in",
                Access::Technician => "technician",
                Access::Admin => "admin",
            };
            (r.method.to_string(), r.path.to_owned(), access)
        })
        .collect();
    let expected: Vec<(String, String, &str)> = expected_access()
        .into_iter()
        .map(|(m, p, a)| (m.to_owned(), p.to_owned(), a))
        .collect();
    for route in &declared {
        assert!(
            expected.contains(route),
            "route {route:?} has no expectation in this test"
        );
    }
    for route in &expected {
        assert!(
            declared.contains(route),
            "expected route {route:?} is not served"
        );
    }

    // Destructive routes last, so earlier checks still find their objects.
    let mut ordered = routes.clone();
    ordered.sort_by_key(|r| (r.method == axum::http::Method::DELETE) as u8);
    let callers = [
        Caller::Anonymous,
        Caller::Customer,
        Caller::Technician,
        Caller::OtherAccountAdmin,
        Caller::Admin,
    ];
    for caller in callers {
        for route in &ordered {
            let path = route
                .path
                .replace("{id}", &session_id)
                .replace("{peer}", "999999")
                .replace("{user_id}", &tech_id)
                .replace("{group_id}", &group);
            let mut client = match caller {
                Caller::Anonymous | Caller::Customer => app.client(),
                Caller::Technician => {
                    login(&app, "tess@example.com", "Orchid lantern 93 quay")
                        .await
                        .0
                }
                Caller::Admin => login(&app, ADMIN.0, ADMIN.1).await.0,
                Caller::OtherAccountAdmin => {
                    login(&app, "bob@other.example", "Walrus ledger 58 pine")
                        .await
                        .0
                }
            };
            let mut headers = vec![
                ("content-type", "application/json"),
                ("x-sightline-csrf", "1"),
            ];
            if caller == Caller::Customer {
                headers = customer.headers(&headers);
            }
            let body = if route.method == axum::http::Method::GET {
                Vec::new()
            } else {
                b"{}".to_vec()
            };
            let response = client
                .request(route.method.as_str(), &path, &headers, body)
                .await;
            let status = response.status;
            let denied = status == 401 || status == 403;
            let names_other_account =
                path.contains(&session_id) || path.contains(&tech_id) || path.contains(&group);
            let what = format!(
                "{caller:?} {} {path} → {status} {}",
                route.method,
                response.text()
            );
            match (route.access, caller) {
                (Access::Public, _) => assert!(!denied, "{what}"),
                (Access::Invitation, Caller::Customer) => assert!(!denied, "{what}"),
                (Access::Invitation, _) => assert_eq!(status, 401, "{what}"),
                (_, Caller::Anonymous | Caller::Customer) => assert_eq!(status, 401, "{what}"),
                (Access::Admin, Caller::Technician) => assert_eq!(status, 403, "{what}"),
                (Access::Admin | Access::Technician, Caller::OtherAccountAdmin)
                    if names_other_account =>
                {
                    // Answered exactly like an id that exists nowhere.
                    let missing = path
                        .replace(&session_id, "00000000000000000000000000000000")
                        .replace(&tech_id, "00000000000000000000000000000001")
                        .replace(&group, "00000000000000000000000000000002");
                    let body = if route.method == axum::http::Method::GET {
                        Vec::new()
                    } else {
                        b"{}".to_vec()
                    };
                    let reference = client
                        .request(route.method.as_str(), &missing, &headers, body)
                        .await;
                    assert_eq!(
                        (status, response.json()["error"].clone()),
                        (reference.status, reference.json()["error"].clone()),
                        "another account's ids look missing: {what}"
                    );
                    assert!(!denied, "{what}");
                }
                _ => assert!(!denied, "{what}"),
            }
            if caller == Caller::OtherAccountAdmin
                && status == 200
                && route.method == axum::http::Method::GET
            {
                let text = response.text();
                assert!(
                    !text.contains(&session_id) && !text.contains(&tech_id),
                    "{what}"
                );
            }
        }
    }
    let _: Value = json!(null);
}
