//! The REST and WebSocket surface: the route table, the one place where every route's
//! required access is declared and enforced, errors, and the embedded pages.

mod bodies;
mod data;
mod errors;
mod files;
mod identity;
mod invitation;
mod negotiation;
mod openapi;
mod reports;
mod sessions;
mod signaling;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};

use crate::audit::{Actor, Audit, AuditKind};
use crate::auth::{Auth, AuthError, Principal, Role, Stage};
use crate::http::{ConnInfo, security_headers};
use crate::live::Live;
use bodies::{JsonBody, OptionalJsonBody, StillUpload};
use errors::api_not_found;
pub use errors::{ApiError, ERROR_CODES};
pub use openapi::{Undocumented, status_of};

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
    /// Refusals sent that the OpenAPI description does not list.
    pub undocumented: Undocumented,
    /// The served certificate, for the console's expiry warning.
    pub certificates: Arc<crate::tls::Certificates>,
    /// Sends invitations by e-mail and SMS, where configured.
    pub messenger: Arc<crate::messaging::Messenger>,
    /// The names the appliance answers by (its certificate's), for the links it sends.
    pub server_names: Vec<String>,
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
    /// One line for the API description.
    pub summary: &'static str,
    /// The refusals the handler itself makes; those that come with the access, the method
    /// and the shared layers are added by [`Route::error_codes`].
    pub errors: Vec<&'static str>,
    describe: openapi::Describe,
}

/// A row of the table: the route and what serves it.
struct Row(Route, MethodRouter<AppState>);

/// A table entry: the method is stated once and serves both the table and the router,
/// so the declared access always belongs to the method actually served; the handler's
/// types describe its request and answer.
fn r<H, T, I, O>(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: H,
) -> Row
where
    H: Handler<T, AppState> + aide::operation::OperationHandler<I, O>,
    T: 'static,
    I: aide::OperationInput,
    O: aide::OperationOutput,
{
    // The table uses GET, POST, PATCH and DELETE only, which axum always routes.
    let filter = MethodFilter::try_from(method.clone()).expect("a routable HTTP method");
    Row(
        Route {
            method,
            path,
            access,
            summary,
            errors: Vec::new(),
            describe: openapi::describe::<I, O>,
        },
        on(filter, handler),
    )
}

impl Row {
    fn errors(mut self, errors: &[&'static str]) -> Self {
        self.0.errors.extend_from_slice(errors);
        self
    }

    /// Lets the route take bodies up to the size of a camera still.
    fn large(self) -> Self {
        Self(
            self.0,
            self.1
                .layer(DefaultBodyLimit::max(crate::live::MAX_STILL_BYTES)),
        )
    }
}

/// The refusals of a technician's routes under a session: one they may not see is not there.
const SESSION: &[&str] = &["not_found"];
/// The refusals of routes a customer calls with the invitation.
const CUSTOMER: &[&str] = &["invitation_invalid", "ended", "throttled"];
/// The refusals of SDP offers.
const MEDIA: &[&str] = &["invalid_sdp", "unsupported_media_type", "ended"];
/// A new password that breaks the rules.
const PASSWORD_RULES: &[&str] = &[
    "password_too_short",
    "password_too_long",
    "password_letters_and_digits",
    "password_too_common",
    "password_own_details",
];

#[rustfmt::skip]
fn table() -> Vec<Row> {
    use Access::*;
    vec![
        r(Method::GET, "/api/setup", Public, "Whether the appliance still waits for its first account", identity::setup_status),
        r(Method::POST, "/api/setup", Public, "Create the first account and its admin with the setup code", identity::setup).errors(&["already_set_up", "bad_setup_code", "throttled", "invalid"]).errors(PASSWORD_RULES),
        r(Method::POST, "/api/login", Public, "Sign in with email and password", identity::login).errors(&["bad_credentials", "locked", "deactivated", "throttled"]),
        r(Method::POST, "/api/join/pin", Public, "Exchange the PIN a customer was told for the invitation token", invitation::join_with_pin).errors(&["pin_invalid", "throttled"]),
        r(Method::GET, "/api/openapi.json", Public, "This description", openapi_json),
        r(Method::GET, "/api/ws", Public, "Open the signaling WebSocket", signaling::websocket).errors(&["foreign_origin"]),
        r(Method::GET, "/api/me", SigningIn, "Who is signed in, and which sign-in step is due", identity::me),
        r(Method::POST, "/api/logout", SigningIn, "Sign out", identity::logout),
        r(Method::POST, "/api/login/second-factor", SigningIn, "Give the authenticator code", identity::second_factor).errors(&["bad_second_factor", "wrong_stage", "locked", "throttled"]),
        r(Method::POST, "/api/me/password", SigningIn, "Change one's own password", identity::change_password).errors(&["bad_credentials", "wrong_stage", "throttled"]).errors(PASSWORD_RULES),
        r(Method::POST, "/api/me/totp", SigningIn, "Begin enrolling an authenticator app", identity::begin_totp).errors(&["wrong_stage", "conflict"]),
        r(Method::POST, "/api/me/totp/confirm", SigningIn, "Confirm the authenticator app with a code", identity::confirm_totp).errors(&["bad_second_factor", "wrong_stage", "throttled"]),
        r(Method::POST, "/api/logout/everywhere", Technician, "Sign out on every device", identity::logout_everywhere),
        r(Method::GET, "/api/sessions", Technician, "The support sessions one may see, filtered", sessions::list_sessions),
        r(Method::POST, "/api/sessions", Technician, "Start a support session and get the customer's link and PIN", sessions::create_session).errors(&["invalid", "not_allowed"]),
        r(Method::GET, "/api/sessions.csv", Technician, "The filtered history as CSV", sessions::sessions_csv),
        r(Method::GET, "/api/sessions/{id}", Technician, "One session", sessions::get_session).errors(SESSION),
        r(Method::POST, "/api/sessions/{id}/invitations", Technician, "Send the customer a link by e-mail or SMS", sessions::send_invitation).errors(SESSION).errors(&["not_configured", "invalid_recipient", "throttled", "delivery_failed", "already_joined", "ended", "not_allowed"]),
        r(Method::POST, "/api/sessions/{id}/end", Technician, "End a session", sessions::end_session).errors(SESSION).errors(&["ended"]),
        r(Method::GET, "/api/sessions/{id}/transcript", Technician, "A session's chat", sessions::transcript).errors(SESSION),
        r(Method::GET, "/api/sessions/{id}/record", Technician, "A session's record: consent, stills, recordings, events", files::record).errors(SESSION),
        r(Method::GET, "/api/sessions/{id}/stills/{still}", Technician, "A camera still of the session", files::still).errors(SESSION),
        r(Method::GET, "/api/sessions/{id}/recordings/{recording}", Technician, "A recording of the session (byte ranges supported)", files::recording).errors(SESSION),
        r(Method::POST, "/api/sessions/{id}/colleagues", Technician, "Invite a colleague into the session", sessions::invite_colleague).errors(SESSION).errors(&["not_allowed", "conflict", "ended"]),
        r(Method::DELETE, "/api/sessions/{id}/colleagues/{user_id}", Technician, "Remove a colleague from the session", sessions::remove_colleague).errors(SESSION).errors(&["not_allowed"]),
        r(Method::GET, "/api/reports", Technician, "Session figures per day or week, technician and group (one's own for a technician)", reports::report),
        r(Method::GET, "/api/reports.csv", Technician, "The same report as CSV", reports::report_csv),
        r(Method::GET, "/api/colleagues", Technician, "The colleagues one may invite", sessions::colleagues),
        r(Method::POST, "/api/sessions/{id}/whep", Technician, "Receive the customer's media (WHEP)", negotiation::whep).errors(SESSION).errors(MEDIA).errors(&["not_allowed"]),
        r(Method::PATCH, "/api/sessions/{id}/whep/{peer}", Technician, "Restart ICE for the technician's media", negotiation::whep_restart).errors(SESSION).errors(MEDIA),
        r(Method::DELETE, "/api/sessions/{id}/whep/{peer}", Technician, "Stop receiving the customer's media", negotiation::whep_delete).errors(SESSION),
        r(Method::GET, "/api/invitation", Invitation, "The session the invitation opens", invitation::invitation).errors(CUSTOMER),
        r(Method::POST, "/api/invitation/whip", Invitation, "Send the camera and microphone (WHIP)", negotiation::whip).errors(CUSTOMER).errors(MEDIA).errors(&["wrong_device", "no_consent"]),
        r(Method::PATCH, "/api/invitation/whip/{peer}", Invitation, "Restart ICE for the customer's media", negotiation::whip_restart).errors(CUSTOMER).errors(MEDIA).errors(&["wrong_device", "not_found"]),
        r(Method::DELETE, "/api/invitation/whip/{peer}", Invitation, "Stop sending media", negotiation::whip_delete).errors(CUSTOMER).errors(&["wrong_device", "not_found"]),
        r(Method::POST, "/api/invitation/stills/{id}", Invitation, "Upload the still the technician asked for", files::upload_still).large().errors(CUSTOMER).errors(&["wrong_device", "not_found", "invalid", "unsupported_media_type"]),
        r(Method::GET, "/api/invitation/stills/{id}", Invitation, "A still the customer took", files::customer_still).errors(CUSTOMER).errors(&["wrong_device", "not_found"]),
        r(Method::GET, "/api/users", Admin, "The account's users", identity::list_users),
        r(Method::POST, "/api/users", Admin, "Create a technician or account admin", identity::create_user).errors(&["conflict", "invalid"]).errors(PASSWORD_RULES),
        r(Method::GET, "/api/users/{user_id}", Admin, "One user", identity::get_user).errors(&["not_found"]),
        r(Method::PATCH, "/api/users/{user_id}", Admin, "Change a user's name, role, groups or state", identity::update_user).errors(&["not_found", "conflict", "invalid"]),
        r(Method::DELETE, "/api/users/{user_id}", Admin, "Delete a user", identity::delete_user).errors(&["not_found", "conflict", "invalid"]),
        r(Method::POST, "/api/users/{user_id}/unlock", Admin, "Unlock a user locked out after failed sign-ins", identity::unlock_user).errors(&["not_found"]),
        r(Method::POST, "/api/users/{user_id}/reset-password", Admin, "Set a one-time password for a user", identity::reset_password).errors(&["not_found", "invalid"]).errors(PASSWORD_RULES),
        r(Method::POST, "/api/users/{user_id}/reset-2fa", Admin, "Remove a user's authenticator so they enrol again", identity::reset_two_factor).errors(&["not_found"]),
        r(Method::GET, "/api/groups", Admin, "The account's technician groups", identity::list_groups),
        r(Method::POST, "/api/groups", Admin, "Create a group", identity::create_group).errors(&["conflict", "invalid"]),
        r(Method::PATCH, "/api/groups/{group_id}", Admin, "Change a group's name or settings", identity::update_group).errors(&["not_found", "conflict", "invalid"]),
        r(Method::DELETE, "/api/groups/{group_id}", Admin, "Delete a group", identity::delete_group).errors(&["not_found", "conflict"]),
        r(Method::GET, "/api/account", Admin, "The account and its policy", identity::get_account),
        r(Method::PATCH, "/api/account", Admin, "Change the account's name or policy", identity::update_account).errors(&["invalid"]),
        r(Method::GET, "/api/certificate", Admin, "The certificate the appliance serves, and whether it expires soon", identity::certificate),
        r(Method::GET, "/api/audit", Admin, "The account's audit log, filtered", identity::audit_log),
        r(Method::GET, "/api/export", Admin, "Export a session's or a customer's data", data::export).errors(&["not_found", "invalid"]),
        r(Method::GET, "/api/deletions", Admin, "Deletion requests still waiting for their delay", data::pending_deletions),
        r(Method::POST, "/api/deletions", Admin, "Request deletion of a session's or a customer's data", data::request_deletion).errors(&["not_found", "invalid"]),
        r(Method::DELETE, "/api/sessions/{id}", Admin, "Request deletion of one session", data::delete_session).errors(&["not_found", "invalid"]),
    ]
}

/// Every API route with its declared access, for documentation and the access tests.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|Row(route, _)| route).collect()
}

/// The OpenAPI description, for scripts and for `sightline` itself.
pub fn openapi_document() -> &'static [u8] {
    openapi::document()
}

async fn openapi_json() -> openapi::Raw<openapi::Description> {
    openapi::Raw::new((
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    ))
}

pub fn router(state: AppState) -> Router {
    let mut api = Router::new();
    for Row(route, handler) in table() {
        let path = route.path;
        let guarded = handler.route_layer(middleware::from_fn_with_state(
            (state.clone(), Arc::new(route)),
            enforce,
        ));
        api = api.route(path, guarded);
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

/// Checks the route's declared access and hands the principal to the handler; notes any
/// refusal the route's description does not list.
async fn enforce(
    State((state, route)): State<(AppState, Arc<Route>)>,
    request: Request,
    next: Next,
) -> Response {
    let response = guard(&state, route.access, request, next).await;
    if let Some(code) = openapi::refusal_code(&response)
        && !route.documents(response.status(), code)
    {
        state.undocumented.note(&route, response.status(), code);
    }
    response
}

async fn guard(state: &AppState, access: Access, mut request: Request, next: Next) -> Response {
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
