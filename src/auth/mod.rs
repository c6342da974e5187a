//! Who may use the console: accounts and their users, the first-run setup code, password
//! policy and lockout, two-factor sign-in, login sessions held server-side behind an
//! opaque cookie, and the principal every API call runs as.
//!
//! Here: the model (accounts, users, groups, the principal) and what every part uses.
//! `setup`, `login` (with lockout and the second factor), `self_service`, `admin` and
//! `operator` each hold their own `impl Auth` block.

mod admin;
mod login;
mod operator;
pub mod password;
mod self_service;
mod setup;
pub mod totp;

pub use crate::ids::{random_id, random_token, sha256_hex};

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rand::Rng;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::audit::{Actor, Audit, AuditKind, GuessThrottle};
use crate::clock::{SharedClock, UnixMillis};
pub use crate::ids::{AccountId, UserId};
use crate::store::{Collection, Store, StoreError};
pub use password::PolicyViolation;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the appliance is already set up")]
    AlreadySetUp,
    #[error("the setup code is wrong, used or expired")]
    BadSetupCode,
    #[error("email or password is wrong")]
    BadCredentials,
    #[error("too many failed sign-ins; try again after the lockout ends")]
    Locked { until_ms: UnixMillis },
    #[error("this user is deactivated; ask your account administrator")]
    Deactivated,
    #[error("the code is wrong or was already used")]
    BadSecondFactor,
    #[error("not signed in or the sign-in has expired")]
    Unauthenticated,
    #[error("finish signing in first: {0}")]
    WrongStage(&'static str),
    #[error("you are not allowed to do this")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("too many attempts from this address; try again later")]
    Throttled,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Policy(#[from] PolicyViolation),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed")]
    Hashing,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    AccountAdmin,
    Technician,
}

/// Settings an account admin controls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AccountPolicy {
    /// Raises the password minimum above the floor of 8.
    pub password_min_length: usize,
    pub idle_timeout_mins: u64,
    pub absolute_timeout_hours: u64,
    /// Technicians may record sessions whose customer agreed to it.
    pub allow_recording: bool,
    /// Days an ended session (its record, chat, stills and recordings) is kept before
    /// the hourly retention sweep deletes it.
    pub session_retention_days: u32,
}

/// The longest an account may keep ended sessions: ten years, the longest retention
/// period commercial record-keeping rules ask for.
pub const MAX_SESSION_RETENTION_DAYS: u32 = 3650;

impl Default for AccountPolicy {
    fn default() -> Self {
        Self {
            password_min_length: password::FLOOR_LENGTH,
            idle_timeout_mins: 30,
            absolute_timeout_hours: 12,
            allow_recording: false,
            session_retention_days: 365,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Subscription {
    pub seats: u32,
    /// The day the subscription ends (Unix milliseconds), if it has an end.
    pub ends_ms: Option<UnixMillis>,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            seats: 25,
            ends_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Account {
    pub id: AccountId,
    pub organisation: String,
    pub created_ms: UnixMillis,
    #[serde(default)]
    pub policy: AccountPolicy,
    #[serde(default)]
    pub subscription: Subscription,
}

/// A technician group and its policies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// Members must use two-factor sign-in (and enrol at their next sign-in).
    pub require_2fa: bool,
    /// Members may see the session history of the whole group, not just their own.
    pub see_group_history: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct TotpState {
    secret: Vec<u8>,
    enabled: bool,
    last_step: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub account_id: AccountId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    password_hash: String,
    pub created_ms: UnixMillis,
    pub active: bool,
    pub must_change_password: bool,
    pub group_ids: Vec<String>,
    #[serde(default)]
    totp: Option<TotpState>,
    #[serde(default)]
    recovery_codes: Vec<String>,
}

impl User {
    fn two_factor_enabled(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.enabled)
    }
}

/// What an admin sees of a user.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ColleagueChoice {
    pub id: UserId,
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub active: bool,
    pub group_ids: Vec<String>,
    pub two_factor_enabled: bool,
    pub must_change_password: bool,
    pub locked_until_ms: Option<UnixMillis>,
    pub created_ms: UnixMillis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailIndexEntry {
    account_id: AccountId,
    user_id: UserId,
}

/// Failed sign-ins per email, kept whether or not the email belongs to a user, so that
/// lockout behaves identically for both and reveals nothing.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct LoginFailures {
    count: u32,
    locked_until_ms: Option<UnixMillis>,
}

/// How far a login session has got.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Password accepted; a TOTP or recovery code is still needed.
    SecondFactor,
    /// An admin reset the password; a new one must be chosen.
    ChangePassword,
    /// The user's group requires two-factor sign-in; they must enrol now.
    EnrolTwoFactor,
    /// Fully signed in.
    Complete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoginSession {
    account_id: AccountId,
    user_id: UserId,
    created_ms: UnixMillis,
    last_seen_ms: UnixMillis,
    stage: Stage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetupState {
    code_hash: String,
    expires_ms: UnixMillis,
}

/// The authenticated user an API call runs as.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Principal {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub email: String,
    pub display_name: String,
    pub organisation: String,
    pub role: Role,
    pub stage: Stage,
    pub group_ids: Vec<String>,
    pub two_factor_enabled: bool,
    /// Whether the user may see the history of their groups' sessions.
    pub sees_group_history: bool,
}

/// Details the first account admin chooses during setup.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SetupRequest {
    pub code: String,
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub organisation: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub password: String,
    #[serde(default)]
    pub group_ids: Vec<String>,
}

#[derive(Debug, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub group_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupChange {
    pub name: Option<String>,
    pub require_2fa: Option<bool>,
    pub see_group_history: Option<bool>,
}

/// Enrolment details shown once: the secret for manual entry, the URI for a QR code.
#[derive(Debug, Clone, Serialize)]
pub struct TotpEnrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

pub const MAX_FAILURES: u32 = 5;
/// Failed sign-ins from one source within a minute (any emails) that raise an alert.
pub const LOGIN_FAILURES_PER_SOURCE: u32 = 30;
pub const LOCKOUT_MS: u64 = 5 * 60_000;
const SETUP_KEY: &str = "setup";
/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud is unambiguous.
const CODE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub struct Auth {
    accounts: Collection<Account>,
    emails: Collection<EmailIndexEntry>,
    logins: Collection<LoginSession>,
    failures: Collection<LoginFailures>,
    meta: Collection<SetupState>,
    store: Store,
    clock: SharedClock,
    audit: Arc<Audit>,
    throttle: Arc<GuessThrottle>,
    setup_code_ttl_ms: u64,
    /// Bounds concurrent argon2 work so that a login flood cannot take every core.
    hashing: Semaphore,
    counters: AuthCounters,
    /// Failed sign-ins per source; separate from the PIN/link throttle so that a
    /// technician's typos never stop customers behind the same address from joining.
    login_sources: GuessThrottle,
}

/// Counts for metrics.
#[derive(Debug, Default)]
pub struct AuthCounters {
    pub login_failures: std::sync::atomic::AtomicU64,
    pub lockouts: std::sync::atomic::AtomicU64,
}

impl Auth {
    pub fn new(
        store: &Store,
        clock: SharedClock,
        audit: Arc<Audit>,
        throttle: Arc<GuessThrottle>,
        setup_code_ttl_secs: u64,
    ) -> Result<Self, StoreError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            accounts: store.global("accounts")?,
            emails: store.global("users_by_email")?,
            logins: store.global("login_sessions")?,
            failures: store.global("login_failures")?,
            meta: store.global("meta")?,
            store: store.clone(),
            audit,
            throttle,
            setup_code_ttl_ms: setup_code_ttl_secs * 1000,
            hashing: Semaphore::new(workers.div_ceil(2)),
            counters: AuthCounters::default(),
            login_sources: GuessThrottle::new(LOGIN_FAILURES_PER_SOURCE, clock.clone()),
            clock,
        })
    }

    pub fn counters(&self) -> &AuthCounters {
        &self.counters
    }

    // ------------------------------------------------------------------------------
    // Signing in

    // ------------------------------------------------------------------------------
    // Administration (always within the admin's own account)

    /// Records the end of lockouts that have run out, so the log shows when each ended.
    pub fn sweep(&self) {
        let now = self.clock.now_ms();
        let Ok(entries) = self.failures.entries() else {
            return;
        };
        for (email, failures) in entries {
            if failures.locked_until_ms.is_some_and(|until| until <= now) {
                let _ = self.end_lockout_if_due(&email);
            }
        }
    }

    // ------------------------------------------------------------------------------
    // Operator (CLI) helpers, used on a stopped appliance's data directory

    // ------------------------------------------------------------------------------
    // Records

    /// Audits something a signed-in user (or an admin acting on others) did.
    fn record_by(
        &self,
        who: &Principal,
        kind: AuditKind,
        source: IpAddr,
        detail: impl Into<String>,
    ) {
        self.audit.record(
            kind,
            Actor::user(&who.account_id, &who.user_id).at(source),
            detail,
        );
    }

    /// Audits a change just made, then makes both durable together: the answer that
    /// follows promises both.
    async fn committed(
        &self,
        who: &Principal,
        kind: AuditKind,
        source: IpAddr,
        detail: impl Into<String>,
    ) -> Result<(), AuthError> {
        self.record_by(who, kind, source, detail);
        self.store.flush().await?;
        Ok(())
    }

    fn users(&self, account_id: &AccountId) -> Result<Collection<User>, StoreError> {
        self.store.account(account_id).collection("users")
    }

    fn groups_collection(&self, account_id: &AccountId) -> Result<Collection<Group>, StoreError> {
        self.store.account(account_id).collection("groups")
    }

    fn user_record(&self, account_id: &AccountId, id: &UserId) -> Result<User, AuthError> {
        self.users(account_id)?.get(id)?.ok_or(AuthError::NotFound)
    }

    fn change_user(
        &self,
        account_id: &AccountId,
        id: &str,
        mut change: impl FnMut(&mut User),
    ) -> Result<User, AuthError> {
        self.users(account_id)?
            .update(id, |u| {
                let mut u = u?;
                change(&mut u);
                Some(u)
            })?
            .ok_or(AuthError::NotFound)
    }

    fn account(&self, account_id: &AccountId) -> Result<Account, AuthError> {
        self.accounts
            .get(account_id)?
            .ok_or(AuthError::Unauthenticated)
    }

    fn user_view(&self, user: &User) -> Result<UserView, AuthError> {
        Ok(UserView {
            id: user.id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            role: user.role,
            active: user.active,
            group_ids: user.group_ids.clone(),
            two_factor_enabled: user.two_factor_enabled(),
            must_change_password: user.must_change_password,
            locked_until_ms: self.locked_until(&user.email)?,
            created_ms: user.created_ms,
        })
    }

    fn principal(
        &self,
        user: &User,
        account: &Account,
        stage: Stage,
    ) -> Result<Principal, AuthError> {
        let groups = self.groups_collection(&user.account_id)?;
        let mut sees_group_history = false;
        for id in &user.group_ids {
            sees_group_history |= groups.get(id)?.is_some_and(|g| g.see_group_history);
        }
        Ok(Principal {
            user_id: user.id.clone(),
            account_id: user.account_id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            organisation: account.organisation.clone(),
            role: user.role,
            stage,
            group_ids: user.group_ids.clone(),
            two_factor_enabled: user.two_factor_enabled(),
            sees_group_history,
        })
    }

    async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| AuthError::Hashing)?;
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|_| AuthError::Hashing)?
            .ok_or(AuthError::Hashing)
    }

    async fn verify_password(&self, hash: String, password: String) -> Result<bool, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| AuthError::Hashing)?;
        tokio::task::spawn_blocking(move || password::verify(&hash, &password))
            .await
            .map_err(|_| AuthError::Hashing)
    }
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| password::hash(&random_token()).unwrap_or_default())
}

/// A random password that meets the policy, for handing over by an operator.
pub fn temporary_password() -> String {
    // 20 characters from a 31-letter alphabet, always with letters and digits.
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    loop {
        let candidate: String = (0..20)
            .map(|_| ALPHABET[OsRng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        if password::check(&candidate, password::FLOOR_LENGTH, &[]).is_ok() {
            return candidate;
        }
    }
}

pub fn normalise_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(AuthError::Invalid("that is not an email address".into()))
    }
}

fn clean_name(value: &str, what: &str) -> Result<String, AuthError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 100 || value.chars().any(char::is_control) {
        return Err(AuthError::Invalid(format!(
            "the {what} must have 1 to 100 printable characters"
        )));
    }
    Ok(value.to_owned())
}

fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalise_email("  Ada@Example.COM ").expect("valid"),
            "ada@example.com"
        );
        assert!(normalise_email("no-at-sign").is_err());
    }

    #[test]
    fn setup_codes_ignore_case_and_separators() {
        assert_eq!(normalise_code("ab12-cd34 ef56"), "AB12CD34EF56");
    }

    #[test]
    fn temporary_passwords_meet_the_policy() {
        for _ in 0..5 {
            let p = temporary_password();
            assert!(password::check(&p, 8, &[]).is_ok(), "{p}");
        }
    }
}
