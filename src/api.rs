//! The REST and WebSocket surface: request and response types, the route table, and the
//! one place where each route's caller is established (technician cookie or invitation
//! token).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::audit::{Audit, AuditKind};
use crate::auth::{Auth, AuthError, Principal, SetupRequest};
use crate::http::{ConnInfo, security_headers};
use crate::live::{
    Attachment, ClientMessage, ErrorCode, Live, LiveError, ServerMessage, SessionView,
};
use crate::media::PeerId;

pub const SESSION_COOKIE: &str = "__Host-sightline";
/// Browsers cannot send this header cross-site without a CORS preflight, which the
/// appliance never grants: requiring it on state-changing cookie requests stops CSRF.
pub const CSRF_HEADER: &str = "x-sightline-csrf";

pub struct ApiState {
    pub auth: Arc<Auth>,
    pub live: Arc<Live>,
    pub audit: Arc<Audit>,
    pub ca_pem: String,
    pub public_url: Option<String>,
    pub media_public_ip: Option<IpAddr>,
}

type AppState = Arc<ApiState>;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/setup", get(setup_status).post(setup))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/sessions", get(list_sessions).post(create_session))
        .route("/sessions/{id}", get(get_session))
        .route("/sessions/{id}/end", post(end_session))
        .route("/sessions/{id}/whep", post(whep))
        .route("/sessions/{id}/whep/{peer}", delete(whep_delete))
        .route("/join/pin", post(join_with_pin))
        .route("/invitation", get(invitation))
        .route("/invitation/whip", post(whip))
        .route("/invitation/whip/{peer}", delete(whip_delete))
        .route("/ws", get(websocket))
        .fallback(api_not_found)
        .layer(middleware::from_fn(csrf_guard))
        .layer(DefaultBodyLimit::max(64 * 1024));
    Router::new()
        .nest("/api", api)
        .route("/", get(|| page(CONSOLE_HTML)))
        .route("/c", get(|| page(CUSTOMER_HTML)))
        .route("/join", get(|| page(CUSTOMER_HTML)))
        .route("/assets/{name}", get(asset))
        .route("/ca.pem", get(ca_pem))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Errors

/// An API error: status, a stable machine-readable code and a sentence for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
        }
        let body = Json(Body {
            error: self.code,
            message: &self.message,
        });
        (self.status, body).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let (status, code) = match &e {
            AuthError::AlreadySetUp => (StatusCode::CONFLICT, "already_set_up"),
            AuthError::BadSetupCode => (StatusCode::FORBIDDEN, "bad_setup_code"),
            AuthError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            AuthError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AuthError::Throttled => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            AuthError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            AuthError::Store(_) | AuthError::Hashing => {
                tracing::error!(error = %e, "internal error");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                );
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        let (status, code) = match &e {
            LiveError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            LiveError::InvitationInvalid => (StatusCode::FORBIDDEN, "invitation_invalid"),
            LiveError::PinInvalid => (StatusCode::FORBIDDEN, "pin_invalid"),
            LiveError::Throttled => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            LiveError::AlreadyJoined => (StatusCode::CONFLICT, "already_joined"),
            LiveError::NoConsent => (StatusCode::FORBIDDEN, "no_consent"),
            LiveError::Ended => (StatusCode::GONE, "ended"),
            LiveError::BadMessage(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            LiveError::Media(crate::media::MediaError::InvalidOffer(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_sdp")
            }
            LiveError::Media(_) | LiveError::Store(_) => {
                tracing::error!(error = %e, "internal error");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                );
            }
        };
        Self::new(status, code, e.to_string())
    }
}

async fn api_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
}

/// Parses a JSON body, answering malformed input with a clear 400 instead of axum's
/// plain-text rejection.
struct JsonBody<T>(T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Who is calling

fn conn_info(parts: &Parts) -> ConnInfo {
    parts
        .extensions
        .get::<ConnInfo>()
        .copied()
        .unwrap_or(ConnInfo {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
        })
}

/// The caller's network details, for auditing and for the media address.
struct Caller(ConnInfo);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(conn_info(parts)))
    }
}

impl Caller {
    fn ip(&self) -> IpAddr {
        self.0.peer.ip().to_canonical()
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A signed-in console user (technician or account admin).
struct Technician(Principal);

impl FromRequestParts<AppState> for Technician {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = cookie_token(&parts.headers).ok_or(AuthError::Unauthenticated)?;
        Ok(Self(state.auth.authenticate(&token)?))
    }
}

/// The customer's capability: the invitation token as a bearer token.
struct InvitationToken(String);

impl<S: Send + Sync> FromRequestParts<S> for InvitationToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        bearer(&parts.headers).map(Self).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "an invitation token is required (Authorization: Bearer …)",
            )
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty() && token.len() <= 128).then(|| token.to_owned())
}

async fn csrf_guard(request: axum::extract::Request, next: Next) -> Response {
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    let uses_cookie = cookie_token(request.headers()).is_some();
    let has_bearer = bearer(request.headers()).is_some();
    if changes_state && uses_cookie && !has_bearer && !request.headers().contains_key(CSRF_HEADER) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!("state-changing requests must carry the {CSRF_HEADER} header"),
        )
        .into_response();
    }
    next.run(request).await
}

fn login_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

// ---------------------------------------------------------------------------------------
// Setup and login

#[derive(Serialize)]
struct SetupStatus {
    needed: bool,
}

async fn setup_status(State(state): State<AppState>) -> Json<SetupStatus> {
    Json(SetupStatus {
        needed: state.auth.setup_needed(),
    })
}

async fn setup(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<SetupRequest>,
) -> Result<Response, ApiError> {
    let (principal, token) = state.auth.complete_setup(request, caller.ip()).await?;
    Ok(signed_in(principal, &token))
}

#[derive(Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let (principal, token) = state
        .auth
        .login(&request.email, request.password, caller.ip())
        .await?;
    Ok(signed_in(principal, &token))
}

fn signed_in(principal: Principal, token: &str) -> Response {
    let mut response = Json(principal).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, login_cookie(token));
    response
}

async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = cookie_token(&headers) {
        state.auth.logout(&token, caller.ip())?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-sightline=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

async fn me(Technician(who): Technician) -> Json<Principal> {
    Json(who)
}

// ---------------------------------------------------------------------------------------
// Support sessions (technician side)

#[derive(Serialize)]
struct CreatedSession {
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

async fn create_session(
    State(state): State<AppState>,
    Technician(who): Technician,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<CreatedSession>), ApiError> {
    let invitation = state.live.create_session(&who).await?;
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

async fn list_sessions(
    State(state): State<AppState>,
    Technician(who): Technician,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    Ok(Json(state.live.list_sessions(&who)?))
}

async fn get_session(
    State(state): State<AppState>,
    Technician(who): Technician,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(state.live.session_for(&who, &id)?))
}

async fn end_session(
    State(state): State<AppState>,
    Technician(who): Technician,
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

async fn whip(
    State(state): State<AppState>,
    caller: Caller,
    InvitationToken(token): InvitationToken,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    sdp_body(&headers, &body)?;
    let announce = announce_addr(&state, &caller);
    let (_, peer, answer) = state.live.publish(&token, caller.ip(), &body, announce)?;
    Ok(sdp_created(
        format!("/api/invitation/whip/{}", peer.0),
        answer,
    ))
}

async fn whip_delete(
    State(state): State<AppState>,
    caller: Caller,
    InvitationToken(token): InvitationToken,
    Path(peer): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let session = state.live.resolve_invitation(&token, caller.ip())?;
    state.live.leave_media(&session.id, PeerId(peer), None)?;
    Ok(StatusCode::OK)
}

async fn whep(
    State(state): State<AppState>,
    caller: Caller,
    Technician(who): Technician,
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

async fn whep_delete(
    State(state): State<AppState>,
    Technician(who): Technician,
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
struct PinRequest {
    pin: String,
}

#[derive(Serialize)]
struct PinAnswer {
    token: String,
}

async fn join_with_pin(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<PinRequest>,
) -> Result<Json<PinAnswer>, ApiError> {
    let token = state.live.exchange_pin(&request.pin, caller.ip()).await?;
    Ok(Json(PinAnswer { token }))
}

/// What the customer sees before deciding: who asks, and exactly what would be shared.
#[derive(Serialize)]
struct InvitationView {
    session_id: String,
    technician_name: String,
    organisation: String,
    state: crate::live::SessionState,
    shares: Vec<&'static str>,
    optional: Vec<&'static str>,
}

async fn invitation(
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
        optional: vec!["microphone"],
    }))
}

// ---------------------------------------------------------------------------------------
// Signaling WebSocket

const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BAD_MESSAGES: u32 = 20;
/// Malformed messages audited per connection; the rest are only counted.
const AUDITED_BAD_MESSAGES: u32 = 3;

async fn websocket(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let principal = cookie_token(&headers).and_then(|t| state.auth.authenticate(&t).ok());
    let source = caller.ip();
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| signaling(state, socket, principal, source))
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(json) => socket.send(Message::Text(json.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn signaling(
    state: AppState,
    mut socket: WebSocket,
    principal: Option<Principal>,
    source: IpAddr,
) {
    let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, socket.recv()).await {
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
        (Ok(ClientMessage::Join { token }), _) => state
            .live
            .attach_customer(&token, source)
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
            send(&mut socket, &message).await;
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
            outgoing = outbox.recv() => {
                let Some(message) = outgoing else { return };
                let ended = matches!(message, ServerMessage::Ended { .. });
                if !send(socket, &message).await || ended {
                    return;
                }
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        bad_messages += 1;
                        if !send(socket, &ServerMessage::error(ErrorCode::BadMessage, "messages are JSON text")).await {
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
                if let Some(reply) = reply && !send(socket, &reply).await {
                    return;
                }
                if bad_messages > MAX_BAD_MESSAGES {
                    return;
                }
            }
        }
    }
}

fn live_error_message(e: &LiveError) -> ServerMessage {
    let code = match e {
        LiveError::InvitationInvalid | LiveError::PinInvalid | LiveError::Ended => {
            ErrorCode::InvitationInvalid
        }
        LiveError::NotFound => ErrorCode::NotFound,
        LiveError::AlreadyJoined => ErrorCode::AlreadyJoined,
        LiveError::Throttled => ErrorCode::Throttled,
        LiveError::NoConsent => ErrorCode::NotAllowed,
        LiveError::BadMessage(_) => ErrorCode::Unexpected,
        LiveError::Media(_) | LiveError::Store(_) => ErrorCode::Internal,
    };
    ServerMessage::error(code, e.to_string())
}

// ---------------------------------------------------------------------------------------
// Embedded web pages

const CONSOLE_HTML: &str = include_str!("web/console.html");
const CUSTOMER_HTML: &str = include_str!("web/customer.html");

async fn page(html: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "console.js" => (include_str!("web/console.js"), "text/javascript"),
        "customer.js" => (include_str!("web/customer.js"), "text/javascript"),
        "common.js" => (include_str!("web/common.js"), "text/javascript"),
        "style.css" => (include_str!("web/style.css"), "text/css"),
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset")
                .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn ca_pem(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sightline-ca.pem\"",
            ),
        ],
        state.ca_pem.clone(),
    )
        .into_response()
}
