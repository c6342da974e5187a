//! Identity: first-run setup, signing in (password, second factor), the user's own
//! password and two-factor enrolment, and the account admin's management of users,
//! groups, account settings and the identity audit log.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, NoContent};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::openapi::{Created, Raw, SignedIn, SignedOut};
use super::{ApiError, AppState, Caller, JsonBody, User, cookie_token};
use crate::audit::AuditEntry;
use crate::auth::{
    Account, AccountPolicy, AuthError, Group, GroupChange, NewUser, Principal, SetupRequest,
    Subscription, UserChange, UserView,
};
use crate::ids::UserId;

#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct SetupStatus {
    needed: bool,
}

pub(super) async fn setup_status(State(state): State<AppState>) -> Json<SetupStatus> {
    Json(SetupStatus {
        needed: state.auth.setup_needed(),
    })
}

pub(super) async fn setup(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<SetupRequest>,
) -> Result<SignedIn<Principal>, ApiError> {
    let (principal, token) = state.auth.complete_setup(request, caller.ip()).await?;
    Ok(SignedIn {
        body: principal,
        token,
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct LoginRequest {
    email: String,
    password: String,
}

pub(super) async fn login(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<SignedIn<Principal>, ApiError> {
    let (principal, token) = state
        .auth
        .login(&request.email, request.password, caller.ip())
        .await?;
    Ok(SignedIn {
        body: principal,
        token,
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct CodeRequest {
    code: String,
}

pub(super) async fn second_factor(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CodeRequest>,
) -> Result<Json<Principal>, ApiError> {
    let token = cookie_token(&headers).ok_or(AuthError::Unauthenticated)?;
    Ok(Json(state.auth.second_factor(
        &token,
        &request.code,
        caller.ip(),
    )?))
}

pub(super) async fn me(User(who): User) -> Json<Principal> {
    Json(who)
}

pub(super) async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Raw<SignedOut>, ApiError> {
    if let Some(token) = cookie_token(&headers) {
        state.auth.logout(&token, caller.ip())?;
    }
    Ok(cleared_cookie())
}

pub(super) async fn logout_everywhere(
    State(state): State<AppState>,
    caller: Caller,
    User(who): User,
) -> Result<Raw<SignedOut>, ApiError> {
    state.auth.logout_everywhere(&who, caller.ip())?;
    Ok(cleared_cookie())
}

fn cleared_cookie() -> Raw<SignedOut> {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-sightline=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Raw::new(response)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct PasswordChange {
    current: String,
    new: String,
}

pub(super) async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    User(who): User,
    JsonBody(request): JsonBody<PasswordChange>,
) -> Result<SignedIn<Principal>, ApiError> {
    let (principal, token) = state
        .auth
        .change_password(&who, request.current, request.new, caller.ip())
        .await?;
    Ok(SignedIn {
        body: principal,
        token,
    })
}

#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct Enrolment {
    secret: String,
    otpauth_uri: String,
    qr_svg: String,
}

pub(super) async fn begin_totp(
    State(state): State<AppState>,
    User(who): User,
) -> Result<Json<Enrolment>, ApiError> {
    let enrolment = state.auth.begin_totp(&who)?;
    let svg = qrcode::QrCode::new(enrolment.otpauth_uri.as_bytes())
        .map_err(|_| ApiError::internal())?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .build();
    Ok(Json(Enrolment {
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauth_uri,
        qr_svg: format!(
            "data:image/svg+xml;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(svg)
        ),
    }))
}

#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct Enrolled {
    user: Principal,
    recovery_codes: Vec<String>,
}

pub(super) async fn confirm_totp(
    State(state): State<AppState>,
    caller: Caller,
    User(who): User,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CodeRequest>,
) -> Result<Json<Enrolled>, ApiError> {
    let token = cookie_token(&headers).ok_or(AuthError::Unauthenticated)?;
    let (user, recovery_codes) = state
        .auth
        .confirm_totp(&who, &token, &request.code, caller.ip())
        .await?;
    Ok(Json(Enrolled {
        user,
        recovery_codes,
    }))
}

// ---------------------------------------------------------------------------------------
// Account administration

pub(super) async fn list_users(
    State(state): State<AppState>,
    User(admin): User,
) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(state.auth.list_users(&admin)?))
}

pub(super) async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    JsonBody(new): JsonBody<NewUser>,
) -> Result<Created<UserView>, ApiError> {
    let user = state.auth.create_user(&admin, new, caller.ip()).await?;
    Ok(Created(user))
}

pub(super) async fn get_user(
    State(state): State<AppState>,
    User(admin): User,
    Path(id): Path<UserId>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(state.auth.get_user(&admin, &id)?))
}

pub(super) async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    Path(id): Path<UserId>,
    JsonBody(change): JsonBody<UserChange>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(
        state
            .auth
            .update_user(&admin, &id, change, caller.ip())
            .await?,
    ))
}

pub(super) async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    Path(id): Path<UserId>,
) -> Result<NoContent, ApiError> {
    state.auth.delete_user(&admin, &id, caller.ip()).await?;
    Ok(NoContent)
}

pub(super) async fn unlock_user(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    Path(id): Path<UserId>,
) -> Result<NoContent, ApiError> {
    state.auth.unlock(&admin, &id, caller.ip())?;
    Ok(NoContent)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordReset {
    password: String,
}

pub(super) async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    Path(id): Path<UserId>,
    JsonBody(request): JsonBody<PasswordReset>,
) -> Result<NoContent, ApiError> {
    state
        .auth
        .reset_password(&admin, &id, request.password, caller.ip())
        .await?;
    Ok(NoContent)
}

pub(super) async fn reset_two_factor(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    Path(id): Path<UserId>,
) -> Result<NoContent, ApiError> {
    state
        .auth
        .reset_two_factor(&admin, &id, caller.ip())
        .await?;
    Ok(NoContent)
}

pub(super) async fn list_groups(
    State(state): State<AppState>,
    User(admin): User,
) -> Result<Json<Vec<Group>>, ApiError> {
    Ok(Json(state.auth.list_groups(&admin)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewGroup {
    name: String,
    #[serde(default)]
    require_2fa: bool,
    #[serde(default)]
    see_group_history: bool,
}

pub(super) async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    JsonBody(new): JsonBody<NewGroup>,
) -> Result<Created<Group>, ApiError> {
    let group = state
        .auth
        .create_group(
            &admin,
            &new.name,
            new.require_2fa,
            new.see_group_history,
            caller.ip(),
        )
        .await?;
    Ok(Created(group))
}

pub(super) async fn update_group(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<GroupChange>,
) -> Result<Json<Group>, ApiError> {
    Ok(Json(
        state
            .auth
            .update_group(&admin, &id, change, caller.ip())
            .await?,
    ))
}

pub(super) async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    Path(id): Path<String>,
) -> Result<NoContent, ApiError> {
    state.auth.delete_group(&admin, &id, caller.ip()).await?;
    Ok(NoContent)
}

pub(super) async fn get_account(
    State(state): State<AppState>,
    User(admin): User,
) -> Result<Json<Account>, ApiError> {
    Ok(Json(state.auth.get_account(&admin)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountChange {
    policy: Option<AccountPolicy>,
    subscription: Option<Subscription>,
}

pub(super) async fn update_account(
    State(state): State<AppState>,
    caller: Caller,
    User(admin): User,
    JsonBody(change): JsonBody<AccountChange>,
) -> Result<Json<Account>, ApiError> {
    Ok(Json(
        state
            .auth
            .update_account(&admin, change.policy, change.subscription, caller.ip())
            .await?,
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditFilter {
    /// Which part of the log: identity events (the default) or data requests.
    #[serde(default)]
    topic: AuditTopic,
    kind: Option<String>,
    user_id: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum AuditTopic {
    #[default]
    Identity,
    /// Exports, deletion requests and the deletions carried out.
    Data,
}

/// What the console warns about this many days before the certificate expires.
const CERTIFICATE_WARNING_DAYS: u64 = 30;

#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct CertificateView {
    #[serde(flatten)]
    certificate: crate::tls::CertInfo,
    /// Whole days until it expires (0 once expired).
    days_left: u64,
    /// It expires within 30 days: time to import a renewed one.
    expires_soon: bool,
}

pub(super) async fn certificate(
    State(state): State<AppState>,
    User(_admin): User,
) -> Result<Json<CertificateView>, ApiError> {
    let certificate = state.certificates.info().ok_or_else(ApiError::internal)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let days_left = certificate.not_after_ms.saturating_sub(now_ms) / 86_400_000;
    Ok(Json(CertificateView {
        certificate,
        days_left,
        expires_soon: days_left < CERTIFICATE_WARNING_DAYS,
    }))
}

/// The account's identity events or its data requests, newest first, filterable by kind,
/// user and time.
pub(super) async fn audit_log(
    State(state): State<AppState>,
    User(admin): User,
    query: Result<Query<AuditFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let Query(filter) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let shown = |e: &AuditEntry| {
        e.account_id.as_deref() == Some(admin.account_id.as_str())
            && match filter.topic {
                AuditTopic::Identity => e.kind.is_identity(),
                AuditTopic::Data => e.kind.is_data_request(),
            }
            && filter
                .kind
                .as_deref()
                .is_none_or(|k| serde_json::to_value(&e.kind).is_ok_and(|v| v.as_str() == Some(k)))
            && filter
                .user_id
                .as_deref()
                .is_none_or(|u| e.actor.as_deref() == Some(u))
            && filter.since_ms.is_none_or(|t| e.at_ms >= t)
            && filter.until_ms.is_none_or(|t| e.at_ms < t)
    };
    // The newest 1,000 that match, read back from the log's head one at a time: the log
    // is the whole appliance's history, and grows with every session.
    let mut page = Vec::new();
    for entry in state.audit.newest_first() {
        let entry = entry.map_err(|_| ApiError::internal())?;
        if shown(&entry) {
            page.push(entry);
            if page.len() == 1000 {
                break;
            }
        }
    }
    Ok(Json(page))
}
