//! Reports over the session history, through the API as the console asks for them: the
//! figures of sessions the test ran with known outcomes and durations, for the account
//! admin (whole account, by technician and group) and for a technician (their own), as
//! JSON and CSV; bad spans refused.

use serde_json::{Value, json};

use crate::common::*;

/// A session the customer joins and answers (`camera`, `microphone`); it ends after
/// `lasting` seconds when `lasting` is given.
async fn run_session(
    app: &TestAppliance,
    technician: &mut Client,
    camera: bool,
    microphone: bool,
    lasting: Option<u64>,
) {
    let (id, token, _) = create_session(technician).await;
    let (mut tech, mut customer, _) = watch_and_join(app, technician, &id, &token).await;
    recv_state(&mut customer, "joined").await;
    send(
        &mut customer,
        json!({"type": "consent", "camera": camera, "microphone": microphone}),
    )
    .await;
    recv_state(&mut tech, if camera { "consented" } else { "declined" }).await;
    if let Some(secs) = lasting {
        app.clock.advance_secs(secs);
        let ended = technician
            .post_empty(&format!("/api/sessions/{id}/end"))
            .await;
        assert_eq!(ended.status, 200, "{}", ended.text());
    }
}

fn figures(v: &Value) -> (u64, u64, u64, u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    (
        n("sessions"),
        n("answered"),
        n("declined"),
        n("granted"),
        n("microphone_shared"),
    )
}

#[tokio::test]
async fn reports_count_what_happened_for_the_account_and_for_a_technician() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let field = create_group(&mut admin, "Field", json!({})).await;
    create_technician(&mut admin, "tess@example.com", vec![field.clone()]).await;
    let mut tess = first_login(&app, "tess@example.com").await;

    run_session(&app, &mut admin, true, false, Some(60)).await;
    run_session(&app, &mut tess, true, true, Some(120)).await;
    run_session(&app, &mut tess, false, false, None).await;
    create_session(&mut admin).await; // never opened

    let report = admin.get("/api/reports").await;
    assert_eq!(report.status, 200, "{}", report.text());
    let report = report.json();
    assert_eq!(report["scope"], "account");
    let totals = &report["totals"];
    assert_eq!(figures(totals), (4, 3, 1, 2, 1));
    assert_eq!(totals["median_duration_secs"], 60);
    assert_eq!(totals["p90_duration_secs"], 120);
    assert!((totals["declined_rate"].as_f64().expect("rate") - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(totals["microphone_rate"], 0.5);
    assert_eq!(totals["recordings"], 0);
    // Thirty days by day, the sessions in the last one.
    let periods = report["periods"].as_array().expect("periods");
    assert_eq!(periods.len(), 30);
    assert_eq!(periods.last().expect("today")["sessions"], 4);
    assert!(periods[..29].iter().all(|p| p["sessions"] == 0));
    let technicians = report["technicians"].as_array().expect("technicians");
    let names: Vec<(&str, u64)> = technicians
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name"),
                t["sessions"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(names, [("Ada Lovelace", 2), ("Tess Tech", 2)]);
    let tess_line = &technicians[1];
    assert_eq!(figures(tess_line), (2, 2, 1, 1, 1));
    assert_eq!(tess_line["median_duration_secs"], 120);
    let groups = report["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"], "Field");
    assert_eq!(groups[0]["sessions"], 2);

    // By week: one period holds them all.
    let weekly = admin.get("/api/reports?bucket=week").await.json();
    let weeks = weekly["periods"].as_array().expect("periods");
    assert!(weeks.len() == 5 || weeks.len() == 6, "{}", weeks.len());
    assert_eq!(
        weeks
            .iter()
            .map(|w| w["sessions"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        4
    );

    // A technician sees their own, with no breakdown by group.
    let own = tess.get("/api/reports").await.json();
    assert_eq!(own["scope"], "own");
    assert_eq!(figures(&own["totals"]), (2, 2, 1, 1, 1));
    assert_eq!(own["technicians"].as_array().map(Vec::len), Some(1));
    assert_eq!(own["groups"], json!([]));

    // The same figures as CSV.
    let csv = admin.get("/api/reports.csv").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.header("content-type")
            .is_some_and(|t| t.starts_with("text/csv"))
    );
    let text = csv.text();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .expect("header")
            .starts_with("section,key,name,sessions")
    );
    assert_eq!(
        lines.next().expect("totals"),
        "total,account,,4,3,1,2,1,0,60,120,0.3333,0.5000"
    );
    assert!(text.contains("technician,") && text.contains(",Tess Tech,2,2,1,1,1,0,120,120,"));
    assert!(text.contains(",Field,2,"));
    assert_eq!(text.lines().filter(|l| l.starts_with("day,")).count(), 30);
}

#[tokio::test]
async fn report_spans_that_make_no_sense_are_refused() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    for (query, what) in [
        ("since_ms=2000&until_ms=1000", "before"),
        ("since_ms=0&until_ms=1800000000000", "at most"),
        ("bucket=month", "month"),
        ("since_ms=yesterday", "since_ms"),
        ("colour=blue", "colour"),
    ] {
        let answer = admin.get(&format!("/api/reports?{query}")).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.text());
        assert_eq!(answer.json()["error"], "bad_request");
        assert!(
            answer.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains(what)),
            "{query}: {}",
            answer.text()
        );
    }
    // Weeks make a long span fit.
    let long = admin
        .get("/api/reports?since_ms=1700000000000&until_ms=1800000000000&bucket=week")
        .await;
    assert_eq!(long.status, 200, "{}", long.text());
    // Nobody else's.
    assert_eq!(app.client().get("/api/reports").await.status, 401);
}
