//! Support sessions: the technician's session API, the customer's invitation, media
//! negotiation (WHIP for the customer, WHEP for technicians) and the signaling socket.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{
    ApiError, ApiState, AppState, Caller, Customer, InvitationToken, JsonBody, User, cookie_token,
    own_origin,
};
use crate::audit::AuditKind;
use crate::auth::{ColleagueChoice, Principal, Stage};
use crate::live::{
    Attachment, ClientMessage, Colleague, ColleagueRole, ErrorCode, LiveError, ServerMessage,
    SessionFilter, SessionRecord, SessionView, Still,
};
use crate::media::PeerId;
use crate::store::Store;

// ---------------------------------------------------------------------------------------
// Support sessions (technician side)

#[derive(Serialize)]
pub(super) struct CreatedSession {
    session: SessionView,
    link: String,
    pin: String,
    join_url: String,
    /// The link as a QR code, an SVG image in a data URL.
    qr_svg: String,
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

pub(super) async fn create_session(
    State(state): State<AppState>,
    User(who): User,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedSession>), ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct NewSession {
        customer_reference: Option<String>,
    }
    let request: NewSession = if body.iter().all(u8::is_ascii_whitespace) {
        NewSession::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
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
    Ok((
        StatusCode::CREATED,
        Json(CreatedSession {
            session: invitation.session,
            link,
            pin: invitation.pin,
            join_url: format!("{base}/join"),
            qr_svg,
        }),
    ))
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
) -> Result<Response, ApiError> {
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
            s.id.clone(),
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
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sightline-sessions.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// RFC 3339 in UTC, always to the millisecond, so every timestamp in a column has the
/// same shape (a spreadsheet or a script parses one format).
fn rfc3339(ms: Option<u64>) -> String {
    ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    })
    .map(|t| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    })
    .unwrap_or_default()
}

fn json_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Spreadsheets run cells that start with these as formulas; a leading apostrophe keeps
/// a customer reference such as "=HYPERLINK(…)" as text (OWASP CSV injection).
fn defuse_formula(field: &str) -> String {
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    }
}

pub(super) async fn get_session(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(state.live.session_for(&who, &id)?))
}

pub(super) async fn transcript(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::live::ChatLine>>, ApiError> {
    Ok(Json(state.live.transcript_for(&who, &id)?))
}

pub(super) async fn end_session(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(state.live.end_for(&who, &id).await?))
}

// ---------------------------------------------------------------------------------------
// Media negotiation: WHIP for the customer, WHEP for technicians (RFC 9725 style)

fn sdp_body(headers: &HeaderMap, body: &str) -> Result<(), ApiError> {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/sdp"));
    if !is_sdp {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the offer must be sent as application/sdp",
        ));
    }
    if body.trim().is_empty() {
        return Err(ApiError::bad_request("the SDP offer is empty"));
    }
    Ok(())
}

fn announce_addr(state: &ApiState, caller: &Caller) -> SocketAddr {
    let ip = state
        .media_public_ip
        .unwrap_or_else(|| caller.0.local.ip().to_canonical());
    SocketAddr::new(ip, state.live.media().local_addr().port())
}

fn sdp_created(location: String, answer: String) -> Response {
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    response
}

pub(super) async fn whip(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    sdp_body(&headers, &body)?;
    let announce = announce_addr(&state, &caller);
    let (_, peer, answer) = state.live.publish(&proof, caller.ip(), &body, announce)?;
    Ok(sdp_created(
        format!("/api/invitation/whip/{}", peer.0),
        answer,
    ))
}

fn sdp_answer(answer: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/sdp"),
        )],
        answer,
    )
        .into_response()
}

/// An ICE restart of the customer's connection: a new offer for the same resource.
pub(super) async fn whip_restart(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(peer): Path<u64>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    sdp_body(&headers, &body)?;
    let answer = state
        .live
        .restart_customer_media(&proof, caller.ip(), PeerId(peer), &body)
        .await?;
    Ok(sdp_answer(answer))
}

pub(super) async fn whep_restart(
    State(state): State<AppState>,
    User(who): User,
    Path((id, peer)): Path<(String, u64)>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    sdp_body(&headers, &body)?;
    state.live.session_for(&who, &id)?;
    let answer = state
        .live
        .restart_media(&id, PeerId(peer), Some(&who.user_id), &body)
        .await?;
    Ok(sdp_answer(answer))
}

pub(super) async fn whip_delete(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(peer): Path<u64>,
) -> Result<StatusCode, ApiError> {
    state
        .live
        .customer_leaves_media(&proof, caller.ip(), PeerId(peer))?;
    Ok(StatusCode::OK)
}

pub(super) async fn whep(
    State(state): State<AppState>,
    caller: Caller,
    User(who): User,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    sdp_body(&headers, &body)?;
    let announce = announce_addr(&state, &caller);
    let (peer, answer) = state
        .live
        .subscribe(&who, &id, caller.ip(), &body, announce)?;
    Ok(sdp_created(
        format!("/api/sessions/{id}/whep/{}", peer.0),
        answer,
    ))
}

pub(super) async fn whep_delete(
    State(state): State<AppState>,
    User(who): User,
    Path((id, peer)): Path<(String, u64)>,
) -> Result<StatusCode, ApiError> {
    state.live.session_for(&who, &id)?;
    state
        .live
        .leave_media(&id, PeerId(peer), Some(&who.user_id))?;
    Ok(StatusCode::OK)
}

// ---------------------------------------------------------------------------------------
// Customer side

#[derive(Deserialize)]
pub(super) struct PinRequest {
    pin: String,
}

#[derive(Serialize)]
pub(super) struct PinAnswer {
    token: String,
}

pub(super) async fn join_with_pin(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<PinRequest>,
) -> Result<Json<PinAnswer>, ApiError> {
    let token = state.live.exchange_pin(&request.pin, caller.ip()).await?;
    Ok(Json(PinAnswer { token }))
}

/// What the customer sees before deciding: who asks, and exactly what would be shared.
#[derive(Serialize)]
pub(super) struct InvitationView {
    session_id: String,
    technician_name: String,
    organisation: String,
    state: crate::live::SessionState,
    shares: Vec<&'static str>,
    optional: Vec<&'static str>,
}

impl InvitationView {
    fn optional(recording_allowed: bool) -> Vec<&'static str> {
        if recording_allowed {
            vec!["microphone", "recording"]
        } else {
            vec!["microphone"]
        }
    }
}

pub(super) async fn invitation(
    State(state): State<AppState>,
    caller: Caller,
    InvitationToken(token): InvitationToken,
) -> Result<Json<InvitationView>, ApiError> {
    let session = state.live.resolve_invitation(&token, caller.ip())?;
    Ok(Json(InvitationView {
        session_id: session.id,
        technician_name: session.technician_name,
        organisation: session.organisation,
        state: session.state,
        shares: vec!["camera"],
        optional: InvitationView::optional(session.recording_allowed),
    }))
}

// ---------------------------------------------------------------------------------------
// Signaling WebSocket

const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BAD_MESSAGES: u32 = 20;
/// Malformed messages audited per connection; the rest are only counted.
const AUDITED_BAD_MESSAGES: u32 = 3;

pub(super) async fn websocket(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let source = caller.ip();
    // A page of another site must not open a signaling socket in a signed-in browser.
    if !own_origin(&headers, state.public_url.as_deref()) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("(not text)");
        state.audit.record(
            AuditKind::AccessDenied,
            None,
            None,
            Some(source),
            format!("signaling socket from another origin: {:.100}", origin),
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_origin",
            "the signaling socket is open to this appliance's own pages only",
        )
        .into_response();
    }
    let principal = cookie_token(&headers)
        .and_then(|t| state.auth.authenticate(&t).ok())
        .filter(|p| p.stage == Stage::Complete);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| signaling(state, socket, principal, user_agent, source))
}

/// Sends one signaling message, once every write made so far is durable: a message may
/// acknowledge a change (joined, consented, paused, a chat line), and what the other side
/// has seen must survive a crash. `false`: the socket (or the store) failed.
async fn send(store: &Store, socket: &mut WebSocket, message: &ServerMessage) -> bool {
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "a change could not be made durable; closing the socket");
        return false;
    }
    match serde_json::to_string(message) {
        Ok(json) => socket.send(Message::Text(json.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn signaling(
    state: AppState,
    mut socket: WebSocket,
    principal: Option<Principal>,
    user_agent: Option<String>,
    source: IpAddr,
) {
    let first = tokio::select! {
        first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, socket.recv()) => first,
        () = stopped(state.shutdown.clone()) => return,
    };
    let first = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<ClientMessage>(&text),
        _ => return,
    };
    let attached = match (first, &principal) {
        (Ok(ClientMessage::Watch { session_id }), Some(who)) => state
            .live
            .attach_technician(who, &session_id, source)
            .map_err(|e| live_error_message(&e)),
        (Ok(ClientMessage::Watch { .. }), None) => Err(ServerMessage::error(
            ErrorCode::NotAllowed,
            "sign in to follow a session",
        )),
        (Ok(ClientMessage::Join { token, device }), _) => state
            .live
            .attach_customer(&token, device.as_deref(), user_agent.as_deref(), source)
            .map_err(|e| live_error_message(&e)),
        (Ok(_), _) => Err(ServerMessage::error(
            ErrorCode::Unexpected,
            "the first message must be watch or join",
        )),
        (Err(e), _) => {
            state.audit.record(
                AuditKind::MalformedSignaling,
                None,
                None,
                Some(source),
                "malformed first signaling message",
            );
            Err(ServerMessage::error(ErrorCode::BadMessage, e.to_string()))
        }
    };
    let (attachment, mut outbox) = match attached {
        Ok(pair) => pair,
        Err(message) => {
            send(&state.store, &mut socket, &message).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    converse(&state, &mut socket, &attachment, &mut outbox).await;
    state.live.detach(&attachment);
    let _ = socket.send(Message::Close(None)).await;
}

async fn converse(
    state: &ApiState,
    socket: &mut WebSocket,
    attachment: &Attachment,
    outbox: &mut tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
) {
    let mut bad_messages = 0u32;
    loop {
        tokio::select! {
            // Participants are told by `Live::shutdown` first; this only ends the task.
            () = stopped(state.shutdown.clone()) => {
                while let Ok(message) = outbox.try_recv() {
                    send(&state.store, socket, &message).await;
                }
                return;
            }
            outgoing = outbox.recv() => {
                let Some(message) = outgoing else { return };
                let ended = matches!(message, ServerMessage::Ended { .. });
                if !send(&state.store, socket, &message).await || ended {
                    return;
                }
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        bad_messages += 1;
                        if !send(&state.store, socket, &ServerMessage::error(ErrorCode::BadMessage, "messages are JSON text")).await {
                            return;
                        }
                        continue;
                    }
                    _ => return,
                };
                let reply = match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(message) => match state.live.handle(attachment, message).await {
                        Ok(reply) => reply,
                        Err(e) => Some(live_error_message(&e)),
                    },
                    Err(e) => {
                        bad_messages += 1;
                        if bad_messages <= AUDITED_BAD_MESSAGES {
                            state.audit.record(
                                AuditKind::MalformedSignaling,
                                Some(&attachment.account_id),
                                attachment.actor.as_deref(),
                                Some(attachment.source),
                                format!("session {}: {e}", attachment.session_id),
                            );
                        }
                        Some(ServerMessage::error(ErrorCode::BadMessage, e.to_string()))
                    }
                };
                if let Some(reply) = reply && !send(&state.store, socket, &reply).await {
                    return;
                }
                if bad_messages > MAX_BAD_MESSAGES {
                    return;
                }
            }
        }
    }
}

async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn live_error_message(e: &LiveError) -> ServerMessage {
    let code = match e {
        LiveError::InvitationInvalid | LiveError::PinInvalid | LiveError::Ended => {
            ErrorCode::InvitationInvalid
        }
        LiveError::NotFound => ErrorCode::NotFound,
        LiveError::AlreadyJoined => ErrorCode::AlreadyJoined,
        LiveError::Throttled => ErrorCode::Throttled,
        LiveError::NoConsent | LiveError::NotAllowed(_) | LiveError::WrongDevice => {
            ErrorCode::NotAllowed
        }
        LiveError::CustomerAbsent => ErrorCode::Unexpected,
        LiveError::BadMessage(_) => ErrorCode::Unexpected,
        LiveError::Media(_) | LiveError::Store(_) => ErrorCode::Internal,
    };
    ServerMessage::error(code, e.to_string())
}

// ---------------------------------------------------------------------------------------
// Stills, recordings, the session record and colleagues

pub(super) async fn upload_still(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(request): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Still>), ApiError> {
    // Storing writes and syncs a file: off the async workers.
    let ip = caller.ip();
    let still =
        tokio::task::spawn_blocking(move || state.live.store_still(&proof, ip, &request, &body))
            .await
            .map_err(|_| ApiError::internal())??;
    Ok((StatusCode::CREATED, Json(still)))
}

fn image_response(still: &Still, image: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, still.content_type.clone()),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        image,
    )
        .into_response()
}

pub(super) async fn customer_still(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(still_id): Path<String>,
) -> Result<Response, ApiError> {
    let (still, image) = state
        .live
        .still_for_customer(&proof, caller.ip(), &still_id)?;
    Ok(image_response(&still, image))
}

pub(super) async fn still(
    State(state): State<AppState>,
    User(who): User,
    Path((id, still_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (still, image) = state.live.still_for(&who, &id, &still_id)?;
    Ok(image_response(&still, image))
}

pub(super) async fn record(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<String>,
) -> Result<Json<SessionRecord>, ApiError> {
    Ok(Json(state.live.record_for(&who, &id)?))
}

/// A recording as one WebM file, decrypted as it is sent; byte ranges are served so the
/// browser's player can seek.
pub(super) async fn recording(
    State(state): State<AppState>,
    User(who): User,
    Path((id, recording_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (recording, parts) = state.live.recording_for(&who, &id, &recording_id)?;
    let total = recording.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| byte_range(v, total));
    let (start, end) = match range {
        None => (0, total),
        Some(Some(range)) => range,
        Some(None) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let lens = [recording.head_len, recording.body_len, recording.tail_len];
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || send_range(parts, lens, start, end, &tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1)) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// Parses a single `bytes=` range into a half-open interval within `total`.
fn byte_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (total.saturating_sub(n), total)
        }
        (first, "") => (first.parse().ok()?, total),
        (first, last) => (
            first.parse().ok()?,
            last.parse::<u64>().ok()?.saturating_add(1).min(total),
        ),
    };
    (start < end && end <= total).then_some((start, end))
}

/// Reads `[start, end)` of the concatenated parts and sends it in chunks.
fn send_range(
    mut parts: Vec<Box<dyn crate::live::ReadSeek + Send>>,
    lens: [u64; 3],
    start: u64,
    end: u64,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    use std::io::{Read, Seek, SeekFrom};
    let mut offset = 0u64;
    for (part, len) in parts.iter_mut().zip(lens) {
        let (from, to) = (start.max(offset), end.min(offset + len));
        if from < to {
            if let Err(e) = part.seek(SeekFrom::Start(from - offset)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = to - from;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let want = buf.len().min(left as usize);
                match part.read(&mut buf[..want]) {
                    Ok(0) => {
                        let _ = tx.blocking_send(Err(std::io::ErrorKind::UnexpectedEof.into()));
                        return;
                    }
                    Ok(n) => {
                        left -= n as u64;
                        if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        }
        offset += len;
    }
}

pub(super) async fn colleagues(
    State(state): State<AppState>,
    User(who): User,
) -> Result<Json<Vec<ColleagueChoice>>, ApiError> {
    Ok(Json(state.auth.colleagues(&who)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Invite {
    user_id: String,
    role: ColleagueRole,
}

pub(super) async fn invite_colleague(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<String>,
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
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(
        state.live.remove_colleague(&who, &id, &user_id).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn byte_ranges_are_bounded_by_the_file() {
        assert_eq!(byte_range("bytes=0-", 100), Some((0, 100)));
        assert_eq!(byte_range("bytes=10-19", 100), Some((10, 20)));
        assert_eq!(byte_range("bytes=90-500", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=100-", 100), None);
        assert_eq!(byte_range("bytes=5-1", 100), None);
        assert_eq!(byte_range("bytes=0-1,4-5", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
    }
}
