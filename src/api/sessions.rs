//! Support sessions on the technician's side: creating, listing (also as CSV), reading and
//! ending them, and the colleagues invited into one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::openapi::{Created, CsvTable, Raw};
use super::{ApiError, ApiState, AppState, Caller, JsonBody, OptionalJsonBody, User};
use crate::audit::{Actor, AuditKind};
use crate::auth::ColleagueChoice;
use crate::ids::{SessionId, UserId};
use crate::live::{Colleague, ColleagueRole, LiveError, SessionFilter, SessionView};
use crate::messaging::{Channel, Invitation, Language, Recipient, SendError};

#[derive(Serialize, JsonSchema)]
pub(super) struct CreatedSession {
    session: SessionView,
    link: String,
    pin: String,
    join_url: String,
    /// The link as a QR code, an SVG image in a data URL.
    qr_svg: String,
    /// How the appliance can send the customer a link (`POST …/invitations`).
    send_by: Vec<Channel>,
}

fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("https://{host}")
}

/// The base of a link the appliance sends itself. Without `http.public_url` it comes from
/// the request's Host, which a caller can forge (curl does): a company-signed mail must not
/// point elsewhere, so the host must be one of the appliance's names or the very address
/// the request arrived on.
fn sent_link_base(
    state: &ApiState,
    headers: &HeaderMap,
    local: std::net::IpAddr,
) -> Result<String, ApiError> {
    let base = base_url(state, headers);
    if state.public_url.is_some() {
        return Ok(base);
    }
    let authority = base.trim_start_matches("https://");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let ours = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == local,
        Err(_) => state
            .server_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(host)),
    };
    if ours {
        Ok(base)
    } else {
        Err(ApiError::from(LiveError::NotAllowed(format!(
            "{host:?} is not one of the appliance's names; set http.public_url to send links"
        ))))
    }
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSession {
    /// The customer's reference (a ticket or customer number), for history and export.
    customer_reference: Option<String>,
}

pub(super) async fn create_session(
    State(state): State<AppState>,
    User(who): User,
    headers: HeaderMap,
    OptionalJsonBody(request): OptionalJsonBody<NewSession>,
) -> Result<Created<CreatedSession>, ApiError> {
    let recording_allowed = state.auth.get_account(&who)?.policy.allow_recording;
    let invitation = state
        .live
        .create_session(&who, request.customer_reference, recording_allowed)
        .await?;
    let base = base_url(&state, &headers);
    let link = format!("{base}/c#{}", invitation.token);
    let qr = qrcode::QrCode::new(link.as_bytes())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    let qr_svg = format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(qr)
    );
    Ok(Created(CreatedSession {
        session: invitation.session,
        link,
        pin: invitation.pin,
        join_url: format!("{base}/join"),
        qr_svg,
        send_by: state.messenger.channels(),
    }))
}

type FilterQuery =
    Result<axum::extract::Query<SessionFilter>, axum::extract::rejection::QueryRejection>;

fn filter_of(query: FilterQuery) -> Result<SessionFilter, ApiError> {
    query
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(super) async fn list_sessions(
    State(state): State<AppState>,
    User(who): User,
    query: FilterQuery,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    Ok(Json(state.live.list_sessions(&who, &filter_of(query)?)?))
}

/// The filtered history as CSV, for reports.
pub(super) async fn sessions_csv(
    State(state): State<AppState>,
    User(who): User,
    query: FilterQuery,
) -> Result<Raw<CsvTable>, ApiError> {
    let sessions = state.live.history(&who, &filter_of(query)?)?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "session_id",
        "created",
        "technician",
        "customer_reference",
        "state",
        "end_reason",
        "joined",
        "ended",
        "duration_secs",
        "camera_consent",
        "microphone_consent",
    ];
    let io = |_| ApiError::internal();
    writer.write_record(header).map_err(io)?;
    for s in &sessions {
        let duration = match (s.joined_ms, s.ended_ms) {
            (Some(start), Some(end)) => ((end.saturating_sub(start)) / 1000).to_string(),
            _ => String::new(),
        };
        let record = [
            s.id.to_string(),
            rfc3339(Some(s.created_ms)),
            s.technician_name.clone(),
            s.customer_reference.clone().unwrap_or_default(),
            json_name(&s.state),
            s.end_reason.as_ref().map(json_name).unwrap_or_default(),
            rfc3339(s.joined_ms),
            rfc3339(s.ended_ms),
            duration,
            s.consent.as_ref().is_some_and(|c| c.camera).to_string(),
            s.consent.as_ref().is_some_and(|c| c.microphone).to_string(),
        ];
        writer
            .write_record(record.iter().map(|f| defuse_formula(f)))
            .map_err(io)?;
    }
    let body = writer.into_inner().map_err(|_| ApiError::internal())?;
    Ok(Raw::new((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sightline-sessions.csv\"",
            ),
        ],
        body,
    )))
}

fn rfc3339(ms: Option<u64>) -> String {
    ms.map(crate::clock::rfc3339).unwrap_or_default()
}

fn json_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Spreadsheets run cells that start with these as formulas; a leading apostrophe keeps
/// a customer reference such as "=HYPERLINK(…)" as text (OWASP CSV injection).
pub(super) fn defuse_formula(field: &str) -> String {
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    }
}

pub(super) async fn get_session(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<SessionId>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(state.live.session_for(&who, &id)?))
}

pub(super) async fn transcript(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<SessionId>,
) -> Result<Json<Vec<crate::live::ChatLine>>, ApiError> {
    Ok(Json(state.live.transcript_for(&who, &id)?))
}

pub(super) async fn end_session(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<SessionId>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(state.live.end_for(&who, &id).await?))
}

pub(super) async fn colleagues(
    State(state): State<AppState>,
    User(who): User,
) -> Result<Json<Vec<ColleagueChoice>>, ApiError> {
    Ok(Json(state.auth.colleagues(&who)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Invite {
    user_id: UserId,
    role: ColleagueRole,
}

pub(super) async fn invite_colleague(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<SessionId>,
    JsonBody(invite): JsonBody<Invite>,
) -> Result<Json<SessionView>, ApiError> {
    // Someone outside the account is answered like a session that does not exist.
    let user = state
        .auth
        .colleague(&who, &invite.user_id)
        .map_err(|_| ApiError::from(LiveError::NotFound))?;
    let colleague = Colleague {
        user_id: user.id,
        name: user.display_name,
        role: invite.role,
        invited_ms: state.live.now_ms(),
        invited_by: who.user_id.clone(),
    };
    Ok(Json(state.live.add_colleague(&who, &id, colleague).await?))
}

pub(super) async fn remove_colleague(
    State(state): State<AppState>,
    User(who): User,
    Path((id, user_id)): Path<(SessionId, UserId)>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(
        state.live.remove_colleague(&who, &id, &user_id).await?,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendInvitation {
    channel: Channel,
    /// An e-mail address, or a phone number in international form (`+49 170 1234567`).
    to: String,
    /// The language of the message; English when not given.
    #[serde(default)]
    language: Language,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct SentInvitation {
    channel: Channel,
    /// The recipient with most of it hidden (`a…@example.com`, `+…567`).
    to: String,
    sent_ms: u64,
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        let (status, code) = match &e {
            SendError::NotConfigured(_) => (StatusCode::CONFLICT, "not_configured"),
            SendError::InvalidRecipient(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_recipient")
            }
            SendError::Throttled => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            SendError::Delivery { .. } => (StatusCode::BAD_GATEWAY, "delivery_failed"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Sends the customer a link of its own by e-mail or SMS. The audit log names the
/// recipient only by a pseudonym under the account's key: the same address is
/// recognisable across entries, but neither readable nor guessable from the log.
pub(super) async fn send_invitation(
    State(state): State<AppState>,
    User(who): User,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<SessionId>,
    JsonBody(request): JsonBody<SendInvitation>,
) -> Result<Json<SentInvitation>, ApiError> {
    let messenger = &state.messenger;
    messenger.offers(request.channel)?;
    let to = Recipient::parse(request.channel, &request.to)?;
    let base = sent_link_base(&state, &headers, caller.0.local.ip())?;
    // A session one may not see is answered as missing without spending the allowance.
    state.live.session_for(&who, &id)?;
    messenger.take_allowance(&who.user_id)?;
    let (token, session) = state.live.token_to_send(&who, &id).await?;
    let link = format!("{base}/c#{token}");
    let now = state.live.now_ms();
    let invitation = Invitation {
        link: &link,
        technician: &session.technician_name,
        organisation: &session.organisation,
        valid_minutes: session
            .invitation_expires_ms
            .saturating_sub(now)
            .div_ceil(60_000),
        language: request.language,
    };
    let pseudonym = state
        .store
        .account(&who.account_id)
        .pseudonym("invitation recipients", &to.address)
        .map_err(LiveError::from)?;
    let actor = Actor::user(&who.account_id, &who.user_id);
    let what = format!("session {id} by {} to #{pseudonym}", request.channel.name());
    match messenger.send(&to, &invitation).await {
        Ok(()) => {
            state.audit.record(AuditKind::InvitationSent, actor, what);
            Ok(Json(SentInvitation {
                channel: request.channel,
                to: to.masked(),
                sent_ms: state.live.now_ms(),
            }))
        }
        Err(e) => {
            state.audit.record(
                AuditKind::InvitationNotSent,
                actor,
                format!("{what}: {}", e.summary()),
            );
            Err(e.into())
        }
    }
}
