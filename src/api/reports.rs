//! Reports: the account's (for an account admin) or one's own (for a technician) session
//! figures over a span of days or weeks, as JSON for the console's charts and as CSV.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use serde::Deserialize;

use super::openapi::{CsvTable, Raw};
use super::{ApiError, AppState, User};
use crate::auth::{Principal, Role};
use crate::live::reports::{Bucket, Figures, Report};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    /// Sessions created at or after this time (Unix ms); default 30 days before `until_ms`.
    since_ms: Option<u64>,
    /// Sessions created before this time; default the end of today (UTC).
    until_ms: Option<u64>,
    #[serde(default)]
    bucket: Bucket,
}

type ReportQueryResult = Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>;

fn report_for(
    state: &AppState,
    who: &Principal,
    query: ReportQueryResult,
) -> Result<Report, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let groups: Vec<(String, String)> = if who.role == Role::AccountAdmin {
        state
            .auth
            .list_groups(who)?
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect()
    } else {
        Vec::new()
    };
    Ok(state
        .live
        .report(who, q.since_ms, q.until_ms, q.bucket, &groups)?)
}

pub(super) async fn report(
    State(state): State<AppState>,
    User(who): User,
    query: ReportQueryResult,
) -> Result<Json<Report>, ApiError> {
    Ok(Json(report_for(&state, &who, query)?))
}

/// The same figures as CSV: one line per period, technician and group, and the totals.
pub(super) async fn report_csv(
    State(state): State<AppState>,
    User(who): User,
    query: ReportQueryResult,
) -> Result<Raw<CsvTable>, ApiError> {
    let report = report_for(&state, &who, query)?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let io = |_| ApiError::internal();
    writer
        .write_record([
            "section",
            "key",
            "name",
            "sessions",
            "answered",
            "declined",
            "granted",
            "microphone_shared",
            "recordings",
            "median_duration_secs",
            "p90_duration_secs",
            "declined_rate",
            "microphone_rate",
        ])
        .map_err(io)?;
    let mut line = |section: &str, key: String, name: &str, f: &Figures| {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let rate = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
        writer.write_record([
            section.to_owned(),
            key,
            super::sessions::defuse_formula(name),
            f.sessions.to_string(),
            f.answered.to_string(),
            f.declined.to_string(),
            f.granted.to_string(),
            f.microphone_shared.to_string(),
            f.recordings.to_string(),
            opt(f.median_duration_secs),
            opt(f.p90_duration_secs),
            rate(f.declined_rate),
            rate(f.microphone_rate),
        ])
    };
    line("total", report.scope.clone(), "", &report.totals).map_err(io)?;
    for p in &report.periods {
        let bucket = match report.bucket {
            Bucket::Day => "day",
            Bucket::Week => "week",
        };
        line(bucket, crate::clock::rfc3339(p.start_ms), "", &p.figures).map_err(io)?;
    }
    for t in &report.technicians {
        line("technician", t.id.clone(), &t.name, &t.figures).map_err(io)?;
    }
    for g in &report.groups {
        line("group", g.id.clone(), &g.name, &g.figures).map_err(io)?;
    }
    let body = writer.into_inner().map_err(|_| ApiError::internal())?;
    Ok(Raw::new((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sightline-report.csv\"",
            ),
        ],
        body,
    )))
}
