//! The REST and WebSocket surface: the route table, the one place where every route's
//! required access is declared and enforced, errors, and the embedded pages.

mod data;
mod errors;
mod files;
mod identity;
mod invitation;
mod negotiation;
mod sessions;
mod signaling;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use axum::{Json, Router};

use crate::audit::{Actor, Audit, AuditKind};
use crate::auth::{Auth, AuthError, Principal, Role, Stage};
use crate::http::{ConnInfo, security_headers};
use crate::live::Live;
use errors::api_not_found;
pub use errors::{ApiError, ERROR_CODES};

pub const SESSION_COOKIE: &str = "__Host-sightline";
/// Browsers cannot send this header cross-site without a CORS preflight, which the
/// appliance never grants: requiring it on state-changing cookie requests stops CSRF.
pub const CSRF_HEADER: &str = "x-sightline-csrf";

pub struct ApiState {
    pub auth: Arc<Auth>,
    pub live: Arc<Live>,
    pub audit: Arc<Audit>,
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// Flushed before any answer leaves (see [`durable_answers`]).
    pub store: crate::store::Store,
    pub ca_pem: String,
    pub public_url: Option<String>,
    pub media_public_ip: Option<IpAddr>,
    /// Turns true when the appliance shuts down; long-lived WebSocket tasks watch it.
    pub stopping: crate::shutdown::Stopping,
}

type AppState = Arc<ApiState>;

/// Who may call a route. Every route declares one; [`enforce`] checks it before the
/// handler runs, so a handler never sees a caller it was not meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the handler itself may check a secret such as the setup code).
    Public,
    /// The customer: an invitation token as `Authorization: Bearer`.
    Invitation,
    /// A console user at any sign-in stage (second factor, enrolment or password change
    /// still due).
    SigningIn,
    /// A fully signed-in technician or account admin.
    Technician,
    /// A fully signed-in account admin.
    Admin,
}

/// One entry of the route table.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// A table entry: the method is stated once and serves both the table and the router,
/// so the declared access always belongs to the method actually served.
fn r<H, T>(
    method: Method,
    path: &'static str,
    access: Access,
    handler: H,
) -> (Route, MethodRouter<AppState>)
where
    H: Handler<T, AppState>,
    T: 'static,
{
    // The table uses GET, POST, PATCH and DELETE only, which axum always routes.
    let filter = MethodFilter::try_from(method.clone()).expect("a routable HTTP method");
    (
        Route {
            method,
            path,
            access,
        },
        on(filter, handler),
    )
}

/// Lets a route take bodies up to the size of a camera still.
fn large((route, handler): (Route, MethodRouter<AppState>)) -> (Route, MethodRouter<AppState>) {
    (
        route,
        handler.layer(DefaultBodyLimit::max(crate::live::MAX_STILL_BYTES)),
    )
}

#[rustfmt::skip]
fn table() -> Vec<(Route, MethodRouter<AppState>)> {
    use Access::*;
    vec![
        r(Method::GET, "/api/setup", Public, identity::setup_status),
        r(Method::POST, "/api/setup", Public, identity::setup),
        r(Method::POST, "/api/login", Public, identity::login),
        r(Method::POST, "/api/join/pin", Public, invitation::join_with_pin),
        r(Method::GET, "/api/ws", Public, signaling::websocket),
        r(Method::GET, "/api/me", SigningIn, identity::me),
        r(Method::POST, "/api/logout", SigningIn, identity::logout),
        r(Method::POST, "/api/login/second-factor", SigningIn, identity::second_factor),
        r(Method::POST, "/api/me/password", SigningIn, identity::change_password),
        r(Method::POST, "/api/me/totp", SigningIn, identity::begin_totp),
        r(Method::POST, "/api/me/totp/confirm", SigningIn, identity::confirm_totp),
        r(Method::POST, "/api/logout/everywhere", Technician, identity::logout_everywhere),
        r(Method::GET, "/api/sessions", Technician, sessions::list_sessions),
        r(Method::POST, "/api/sessions", Technician, sessions::create_session),
        r(Method::GET, "/api/sessions.csv", Technician, sessions::sessions_csv),
        r(Method::GET, "/api/sessions/{id}", Technician, sessions::get_session),
        r(Method::POST, "/api/sessions/{id}/end", Technician, sessions::end_session),
        r(Method::GET, "/api/sessions/{id}/transcript", Technician, sessions::transcript),
        r(Method::GET, "/api/sessions/{id}/record", Technician, files::record),
        r(Method::GET, "/api/sessions/{id}/stills/{still}", Technician, files::still),
        r(Method::GET, "/api/sessions/{id}/recordings/{recording}", Technician, files::recording),
        r(Method::POST, "/api/sessions/{id}/colleagues", Technician, sessions::invite_colleague),
        r(Method::DELETE, "/api/sessions/{id}/colleagues/{user_id}", Technician, sessions::remove_colleague),
        r(Method::GET, "/api/colleagues", Technician, sessions::colleagues),
        r(Method::POST, "/api/sessions/{id}/whep", Technician, negotiation::whep),
        r(Method::PATCH, "/api/sessions/{id}/whep/{peer}", Technician, negotiation::whep_restart),
        r(Method::DELETE, "/api/sessions/{id}/whep/{peer}", Technician, negotiation::whep_delete),
        r(Method::GET, "/api/invitation", Invitation, invitation::invitation),
        r(Method::POST, "/api/invitation/whip", Invitation, negotiation::whip),
        r(Method::PATCH, "/api/invitation/whip/{peer}", Invitation, negotiation::whip_restart),
        r(Method::DELETE, "/api/invitation/whip/{peer}", Invitation, negotiation::whip_delete),
        large(r(Method::POST, "/api/invitation/stills/{id}", Invitation, files::upload_still)),
        r(Method::GET, "/api/invitation/stills/{id}", Invitation, files::customer_still),
        r(Method::GET, "/api/users", Admin, identity::list_users),
        r(Method::POST, "/api/users", Admin, identity::create_user),
        r(Method::GET, "/api/users/{user_id}", Admin, identity::get_user),
        r(Method::PATCH, "/api/users/{user_id}", Admin, identity::update_user),
        r(Method::DELETE, "/api/users/{user_id}", Admin, identity::delete_user),
        r(Method::POST, "/api/users/{user_id}/unlock", Admin, identity::unlock_user),
        r(Method::POST, "/api/users/{user_id}/reset-password", Admin, identity::reset_password),
        r(Method::POST, "/api/users/{user_id}/reset-2fa", Admin, identity::reset_two_factor),
        r(Method::GET, "/api/groups", Admin, identity::list_groups),
        r(Method::POST, "/api/groups", Admin, identity::create_group),
        r(Method::PATCH, "/api/groups/{group_id}", Admin, identity::update_group),
        r(Method::DELETE, "/api/groups/{group_id}", Admin, identity::delete_group),
        r(Method::GET, "/api/account", Admin, identity::get_account),
        r(Method::PATCH, "/api/account", Admin, identity::update_account),
        r(Method::GET, "/api/audit", Admin, identity::audit_log),
        r(Method::GET, "/api/export", Admin, data::export),
        r(Method::GET, "/api/deletions", Admin, data::pending_deletions),
        r(Method::POST, "/api/deletions", Admin, data::request_deletion),
        r(Method::DELETE, "/api/sessions/{id}", Admin, data::delete_session),
    ]
}

/// Every API route with its declared access, for documentation and the access tests.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

pub fn router(state: AppState) -> Router {
    let mut api = Router::new();
    for (route, handler) in table() {
        let guarded = handler.route_layer(middleware::from_fn_with_state(
            (state.clone(), route.access),
            enforce,
        ));
        api = api.route(route.path, guarded);
    }
    let api = api
        .fallback(api_not_found)
        .layer(middleware::from_fn(csrf_guard))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn(errors::typed_errors));
    Router::new()
        .merge(api)
        .route("/", get(|| page(CONSOLE_HTML)))
        .route("/c", get(|| page(CUSTOMER_HTML)))
        .route("/join", get(|| page(CUSTOMER_HTML)))
        .route("/assets/{*name}", get(asset))
        .route("/ca.pem", get(ca_pem))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(errors::header_limits))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            durable_answers,
        ))
        .with_state(state)
}

/// No answer leaves before every write made so far is durable: whatever a handler
/// changed, and the audit entries it wrote with it, survive a crash once the caller has
/// the answer. Handlers need not remember to flush, and a new route cannot forget. A flush
/// with nothing pending costs nothing; concurrent answers share one fsync.
async fn durable_answers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    match state.store.flush().await {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, "a change could not be made durable; answering 503");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the appliance could not store the change durably; it may not have been kept",
            )
            .into_response()
        }
    }
}

/// Checks the route's declared access and hands the principal to the handler.
async fn enforce(
    State((state, access)): State<(AppState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    let needs_user = matches!(
        access,
        Access::SigningIn | Access::Technician | Access::Admin
    );
    if access == Access::Invitation && bearer(request.headers()).is_none() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "an invitation token is required (Authorization: Bearer …)",
        )
        .into_response();
    }
    if needs_user {
        let principal = match cookie_token(request.headers()).map(|t| state.auth.authenticate(&t)) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return ApiError::from(e).into_response(),
            None => return ApiError::from(AuthError::Unauthenticated).into_response(),
        };
        if access != Access::SigningIn && principal.stage != Stage::Complete {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "sign_in_incomplete",
                format!("finish signing in first ({:?})", principal.stage),
            )
            .into_response();
        }
        if access == Access::Admin && principal.role != Role::AccountAdmin {
            let source = request
                .extensions()
                .get::<ConnInfo>()
                .map(|c| c.peer.ip().to_canonical());
            state.audit.record(
                AuditKind::AccessDenied,
                Actor {
                    source,
                    ..Actor::user(&principal.account_id, &principal.user_id)
                },
                format!("{} {}", request.method(), request.uri().path()),
            );
            return ApiError::from(AuthError::Forbidden).into_response();
        }
        request.extensions_mut().insert(principal);
    }
    next.run(request).await
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

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Who is calling

/// The caller's network details, for auditing and for the media address.
struct Caller(ConnInfo);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(parts.extensions.get::<ConnInfo>().copied().unwrap_or(
            ConnInfo {
                peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                local: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
        )))
    }
}

impl Caller {
    fn ip(&self) -> IpAddr {
        self.0.peer.ip().to_canonical()
    }
}

/// The principal [`enforce`] established for this request.
struct User(Principal);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Self)
            .ok_or_else(|| ApiError::from(AuthError::Unauthenticated))
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

/// The customer's page after it joined: the invitation token and, in
/// `X-Sightline-Device`, the device secret it was given at join.
struct Customer(crate::live::CustomerProof);

/// The header the customer's page carries its device secret in.
const DEVICE_HEADER: &str = "x-sightline-device";

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let InvitationToken(token) = InvitationToken::from_request_parts(parts, state).await?;
        let device = parts
            .headers
            .get(DEVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self(crate::live::CustomerProof { token, device }))
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// Whether a browser's `Origin` is the appliance itself: the host the request was sent to,
/// or the configured public URL. Requests without one (not from a page) pass.
fn own_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let via_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| origin == format!("https://{}", host.to_ascii_lowercase()));
    let via_public_url = public_url.is_some_and(|url| {
        let url = url.to_ascii_lowercase();
        let rest = url.strip_prefix("https://").unwrap_or(&url);
        let authority = rest.split('/').next().unwrap_or(rest);
        origin == format!("https://{authority}")
    });
    via_host || via_public_url
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty() && token.len() <= 128).then(|| token.to_owned())
}

/// A state-changing request that carries the sign-in cookie must carry the CSRF header
/// too, whatever else it carries: an `Authorization` header beside the cookie does not
/// make the cookie any less ambient (our own pages send the header on every such call).
async fn csrf_guard(request: Request, next: Next) -> Response {
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    let uses_cookie = cookie_token(request.headers()).is_some();
    if changes_state && uses_cookie && !request.headers().contains_key(CSRF_HEADER) {
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

fn with_cookie(mut response: Response, token: &str) -> Response {
    response
        .headers_mut()
        .insert(header::SET_COOKIE, login_cookie(token));
    response
}

// ---------------------------------------------------------------------------------------
// Embedded web pages

const CONSOLE_HTML: &str = include_str!("../web/console.html");
const CUSTOMER_HTML: &str = include_str!("../web/customer.html");

async fn page(html: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// The pages' scripts and style, by their path below `src/web/` (built by `build.rs`).
const ASSETS: &[(&str, &str, &str)] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

async fn asset(Path(name): Path<String>) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(path, _, _)| *path == name) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
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
