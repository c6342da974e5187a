//! Who may use the console: accounts and their users, the first-run setup code, password
//! policy and lockout, two-factor sign-in, login sessions held server-side behind an
//! opaque cookie, and the principal every API call runs as.

pub mod password;
pub mod totp;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rand::Rng;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::audit::{Audit, AuditKind, GuessThrottle};
use crate::clock::{SharedClock, UnixMillis};
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    AccountAdmin,
    Technician,
}

/// Settings an account admin controls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub organisation: String,
    pub created_ms: UnixMillis,
    #[serde(default)]
    pub policy: AccountPolicy,
    #[serde(default)]
    pub subscription: Subscription,
}

/// A technician group and its policies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
    pub id: String,
    pub account_id: String,
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
#[derive(Debug, Clone, Serialize)]
pub struct ColleagueChoice {
    pub id: String,
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: String,
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
    account_id: String,
    user_id: String,
}

/// Failed sign-ins per email, kept whether or not the email belongs to a user, so that
/// lockout behaves identically for both and reveals nothing.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct LoginFailures {
    count: u32,
    locked_until_ms: Option<UnixMillis>,
}

/// How far a login session has got.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
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
    account_id: String,
    user_id: String,
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
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub user_id: String,
    pub account_id: String,
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
#[derive(Debug, Deserialize)]
pub struct SetupRequest {
    pub code: String,
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub organisation: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub password: String,
    #[serde(default)]
    pub group_ids: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub group_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
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

    pub fn setup_needed(&self) -> bool {
        self.accounts.is_empty()
    }

    /// While no account exists, makes a fresh one-time setup code (replacing any earlier
    /// one) and returns it for printing. Only its hash is stored.
    pub fn issue_setup_code(&self) -> Result<Option<String>, AuthError> {
        if !self.setup_needed() {
            return Ok(None);
        }
        let raw: String = (0..12)
            .map(|_| CODE_ALPHABET[OsRng.gen_range(0..CODE_ALPHABET.len())] as char)
            .collect();
        let code = format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12]);
        self.meta.put(
            SETUP_KEY,
            &SetupState {
                code_hash: sha256_hex(raw.as_bytes()),
                expires_ms: self.clock.now_ms() + self.setup_code_ttl_ms,
            },
        )?;
        self.store.flush_blocking()?;
        Ok(Some(code))
    }

    /// Checks the setup code, consumes it and creates the account with its first admin.
    pub async fn complete_setup(
        &self,
        request: SetupRequest,
        source: IpAddr,
    ) -> Result<(Principal, String), AuthError> {
        let Some(guess) = self.throttle.begin(source) else {
            return Err(AuthError::Throttled);
        };
        if !self.setup_needed() {
            return Err(AuthError::AlreadySetUp);
        }
        let email = normalise_email(&request.email)?;
        let display_name = clean_name(&request.display_name, "display name")?;
        let organisation = clean_name(&request.organisation, "organisation")?;
        password::check(
            &request.password,
            password::FLOOR_LENGTH,
            &[&email, &display_name, &organisation],
        )?;

        let presented = normalise_code(&request.code);
        let now = self.clock.now_ms();
        // Consume the code atomically: of two concurrent attempts only one succeeds.
        let mut accepted = false;
        self.meta.update(SETUP_KEY, |state| {
            accepted = false;
            let state = state?;
            let matches = sha256_hex(presented.as_bytes())
                .as_bytes()
                .ct_eq(state.code_hash.as_bytes())
                .into();
            if matches && now < state.expires_ms {
                accepted = true;
                None
            } else {
                Some(state)
            }
        })?;
        if !accepted {
            if guess.failed() {
                self.audit.source_throttled(source, "setup code guessing");
            }
            self.audit.record(
                AuditKind::SetupCodeRejected,
                None,
                None,
                Some(source),
                "wrong, used or expired setup code",
            );
            return Err(AuthError::BadSetupCode);
        }

        let password_hash = self.hash_password(request.password).await?;
        let account = self.insert_account(organisation)?;
        let user = self.insert_user(
            &account,
            email,
            display_name,
            Role::AccountAdmin,
            password_hash,
            false,
            Vec::new(),
        )?;
        let token = self.start_login(&user, Stage::Complete)?;
        self.store.flush().await?;
        self.audit.record(
            AuditKind::SetupCompleted,
            Some(&account.id),
            Some(&user.id),
            Some(source),
            "first account admin created",
        );
        Ok((self.principal(&user, &account, Stage::Complete)?, token))
    }

    /// Creates an account with its first admin (the operator's CLI). The admin's password
    /// is a random one they must change at first sign-in; it is returned for handing over.
    pub fn create_account(
        &self,
        organisation: &str,
        admin_email: &str,
        admin_name: &str,
    ) -> Result<(Account, User, String), AuthError> {
        let organisation = clean_name(organisation, "organisation")?;
        let email = normalise_email(admin_email)?;
        let name = clean_name(admin_name, "display name")?;
        let temporary = temporary_password();
        let hash = password::hash(&temporary).ok_or(AuthError::Hashing)?;
        let account = self.insert_account(organisation)?;
        let user = self.insert_user(
            &account,
            email,
            name,
            Role::AccountAdmin,
            hash,
            true,
            Vec::new(),
        )?;
        self.audit.record(
            AuditKind::AccountCreated,
            Some(&account.id),
            None,
            None,
            format!("account created by the operator with admin {}", user.id),
        );
        self.store.flush_blocking()?;
        Ok((account, user, temporary))
    }

    fn insert_account(&self, organisation: String) -> Result<Account, AuthError> {
        let account = Account {
            id: random_id(),
            organisation,
            created_ms: self.clock.now_ms(),
            policy: AccountPolicy::default(),
            subscription: Subscription::default(),
        };
        self.accounts.put(&account.id, &account)?;
        Ok(account)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_user(
        &self,
        account: &Account,
        email: String,
        display_name: String,
        role: Role,
        password_hash: String,
        must_change_password: bool,
        group_ids: Vec<String>,
    ) -> Result<User, AuthError> {
        let user = User {
            id: random_id(),
            account_id: account.id.clone(),
            email: email.clone(),
            display_name,
            role,
            password_hash,
            created_ms: self.clock.now_ms(),
            active: true,
            must_change_password,
            group_ids,
            totp: None,
            recovery_codes: Vec::new(),
        };
        // The email claim and the user record are written together or not at all.
        let claimed = self.emails.insert_new_with(
            &email,
            &EmailIndexEntry {
                account_id: account.id.clone(),
                user_id: user.id.clone(),
            },
            &self.users(&account.id)?,
            &user.id,
            &user,
        )?;
        if !claimed {
            return Err(AuthError::Conflict(
                "a user with this email already exists".into(),
            ));
        }
        Ok(user)
    }

    // ------------------------------------------------------------------------------
    // Signing in

    /// Checks email and password. Returns the principal in the stage the login reached
    /// (two-factor, enrolment or password change may still be due) and the cookie token.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        source: IpAddr,
    ) -> Result<(Principal, String), AuthError> {
        let email = normalise_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
        let now = self.clock.now_ms();
        let found = match self.emails.get(&email)? {
            Some(entry) => self.users(&entry.account_id)?.get(&entry.user_id)?,
            None => None,
        };
        // Unknown emails cost the same hashing work as known ones and are locked out the
        // same way, so that neither timing nor answers reveal which addresses have users.
        let hash = found
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
        let verified = self.verify_password(hash, password.clone()).await?;

        self.end_lockout_if_due(&email)?;
        if let Some(until) = self.locked_until(&email)? {
            return Err(AuthError::Locked { until_ms: until });
        }
        let user = match found {
            Some(user) if verified => user,
            other => {
                let failures = self.failures.update(&email, |f| {
                    let mut f = f.unwrap_or_default();
                    f.count += 1;
                    if f.count >= MAX_FAILURES {
                        f.locked_until_ms = Some(now + LOCKOUT_MS);
                    }
                    Some(f)
                })?;
                self.store.flush().await?;
                let (account_id, user_id) = other
                    .as_ref()
                    .map(|u| (Some(u.account_id.as_str()), Some(u.id.as_str())))
                    .unwrap_or((None, None));
                self.counters
                    .login_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Many failures from one source (across any emails) is an anomaly of its
                // own, separate from the per-email lockout.
                if self.login_sources.fail(source) {
                    self.audit
                        .alert(source, "many failed sign-ins from one source");
                }
                self.audit.record(
                    AuditKind::LoginFailed,
                    account_id,
                    user_id,
                    Some(source),
                    if other.is_some() {
                        "wrong password"
                    } else {
                        "unknown email"
                    },
                );
                if let Some(until) = failures.and_then(|f| f.locked_until_ms) {
                    self.counters
                        .lockouts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.audit.record(
                        AuditKind::LoginLocked,
                        account_id,
                        user_id,
                        Some(source),
                        format!("{MAX_FAILURES} consecutive failures; locked for 5 minutes"),
                    );
                    return Err(AuthError::Locked { until_ms: until });
                }
                return Err(AuthError::BadCredentials);
            }
        };
        self.failures.remove(&email)?;
        if !user.active {
            return Err(AuthError::Deactivated);
        }
        let user = if password::needs_rehash(&user.password_hash) {
            let new_hash = self.hash_password(password).await?;
            self.change_user(&user.account_id, &user.id, |u| {
                u.password_hash = new_hash.clone()
            })?
        } else {
            user
        };
        let account = self.account(&user.account_id)?;
        let stage = if user.two_factor_enabled() {
            Stage::SecondFactor
        } else {
            self.stage_after_second_factor(&user)?
        };
        let token = self.start_login(&user, stage)?;
        self.audit.record(
            AuditKind::LoginSucceeded,
            Some(&user.account_id),
            Some(&user.id),
            Some(source),
            format!("stage {stage:?}"),
        );
        Ok((self.principal(&user, &account, stage)?, token))
    }

    /// Clears a lockout whose time has run out and records its end.
    fn end_lockout_if_due(&self, email: &str) -> Result<(), AuthError> {
        let now = self.clock.now_ms();
        let expired = self
            .failures
            .get(email)?
            .and_then(|f| f.locked_until_ms)
            .is_some_and(|until| until <= now);
        if expired && self.failures.remove(email)?.is_some() {
            let user = self.emails.get(email)?;
            self.audit.record(
                AuditKind::LockoutEnded,
                user.as_ref().map(|u| u.account_id.as_str()),
                user.as_ref().map(|u| u.user_id.as_str()),
                None,
                "lockout time ran out",
            );
        }
        Ok(())
    }

    fn locked_until(&self, email: &str) -> Result<Option<UnixMillis>, AuthError> {
        let now = self.clock.now_ms();
        Ok(self
            .failures
            .get(email)?
            .and_then(|f| f.locked_until_ms)
            .filter(|until| now < *until))
    }

    fn stage_after_second_factor(&self, user: &User) -> Result<Stage, AuthError> {
        Ok(if user.must_change_password {
            Stage::ChangePassword
        } else if !user.two_factor_enabled() && self.requires_two_factor(user)? {
            Stage::EnrolTwoFactor
        } else {
            Stage::Complete
        })
    }

    fn requires_two_factor(&self, user: &User) -> Result<bool, AuthError> {
        let groups = self.groups_collection(&user.account_id)?;
        for id in &user.group_ids {
            if groups.get(id)?.is_some_and(|g| g.require_2fa) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Completes the second factor with a TOTP code or a recovery code.
    pub fn second_factor(
        &self,
        token: &str,
        code: &str,
        source: IpAddr,
    ) -> Result<Principal, AuthError> {
        let key = sha256_hex(token.as_bytes());
        let session = self.login_session(&key)?;
        if session.stage != Stage::SecondFactor {
            return Err(AuthError::WrongStage("no second factor is expected"));
        }
        let mut user = self.user_record(&session.account_id, &session.user_id)?;
        let email = user.email.clone();
        if let Some(until) = self.locked_until(&email)? {
            return Err(AuthError::Locked { until_ms: until });
        }
        let now_secs = self.clock.now_ms() / 1000;
        let accepted = user.totp.as_ref().and_then(|t| {
            totp::verify(&t.secret, code, now_secs, t.last_step)
                .map(|step| (t.secret.clone(), step))
        });
        let recovery = totp::normalise_recovery_code(code);
        let recovery_hash = sha256_hex(recovery.as_bytes());
        // The step is claimed in the same transaction that checks it is newer than the last
        // one used, so two requests racing with one code cannot both get in.
        let mut claimed = false;
        if let Some((_, step)) = accepted {
            let updated = self.change_user(&user.account_id, &user.id, |u| {
                if let Some(t) = u.totp.as_mut()
                    && t.last_step.is_none_or(|last| step > last)
                {
                    t.last_step = Some(step);
                    claimed = true;
                }
            })?;
            if claimed {
                user = updated;
            }
        }
        if claimed {
            // A fresh TOTP code: nothing more to check.
        } else if recovery.len() == 10 && user.recovery_codes.contains(&recovery_hash) {
            user = self.change_user(&user.account_id, &user.id, |u| {
                u.recovery_codes.retain(|c| *c != recovery_hash)
            })?;
            self.audit.record(
                AuditKind::RecoveryCodeUsed,
                Some(&user.account_id),
                Some(&user.id),
                Some(source),
                format!("{} recovery codes left", user.recovery_codes.len()),
            );
        } else {
            let now = self.clock.now_ms();
            let failures = self.failures.update(&email, |f| {
                let mut f = f.unwrap_or_default();
                f.count += 1;
                if f.count >= MAX_FAILURES {
                    f.locked_until_ms = Some(now + LOCKOUT_MS);
                }
                Some(f)
            })?;
            self.audit.record(
                AuditKind::SecondFactorFailed,
                Some(&user.account_id),
                Some(&user.id),
                Some(source),
                "wrong or reused code",
            );
            if let Some(until) = failures.and_then(|f| f.locked_until_ms) {
                self.logins.remove(&key)?;
                self.audit.record(
                    AuditKind::LoginLocked,
                    Some(&user.account_id),
                    Some(&user.id),
                    Some(source),
                    "repeated wrong second factor",
                );
                return Err(AuthError::Locked { until_ms: until });
            }
            return Err(AuthError::BadSecondFactor);
        }
        self.failures.remove(&email)?;
        let stage = self.stage_after_second_factor(&user)?;
        self.set_stage(&key, stage)?;
        let account = self.account(&user.account_id)?;
        self.principal(&user, &account, stage)
    }

    /// Resolves a login cookie to its principal, enforcing the account's idle and
    /// absolute timeouts. The principal may be in an incomplete stage.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let key = sha256_hex(token.as_bytes());
        let now = self.clock.now_ms();
        let current = self.login_session(&key)?;
        let account = self.account(&current.account_id)?;
        let idle_ms = account.policy.idle_timeout_mins * 60_000;
        let absolute_ms = account.policy.absolute_timeout_hours * 3_600_000;
        let session = self
            .logins
            .update(&key, |s| {
                let mut s = s?;
                if now >= s.last_seen_ms + idle_ms || now >= s.created_ms + absolute_ms {
                    return None;
                }
                s.last_seen_ms = now;
                Some(s)
            })?
            .ok_or(AuthError::Unauthenticated)?;
        let user = self
            .users(&session.account_id)?
            .get(&session.user_id)?
            .filter(|u| u.active)
            .ok_or(AuthError::Unauthenticated)?;
        self.principal(&user, &account, session.stage)
    }

    fn login_session(&self, key: &str) -> Result<LoginSession, AuthError> {
        self.logins.get(key)?.ok_or(AuthError::Unauthenticated)
    }

    fn set_stage(&self, key: &str, stage: Stage) -> Result<(), AuthError> {
        self.logins.update(key, |s| {
            let mut s = s?;
            s.stage = stage;
            Some(s)
        })?;
        Ok(())
    }

    pub fn logout(&self, token: &str, source: IpAddr) -> Result<(), AuthError> {
        if let Some(s) = self.logins.remove(&sha256_hex(token.as_bytes()))? {
            self.audit.record(
                AuditKind::Logout,
                Some(&s.account_id),
                Some(&s.user_id),
                Some(source),
                "",
            );
        }
        Ok(())
    }

    /// Ends every login session of the user (all browsers).
    pub fn logout_everywhere(&self, who: &Principal, source: IpAddr) -> Result<(), AuthError> {
        self.end_sessions_of(&who.user_id)?;
        self.record_by(who, AuditKind::SignedOutEverywhere, source, "");
        Ok(())
    }

    fn end_sessions_of(&self, user_id: &str) -> Result<(), AuthError> {
        self.logins.retain(|s| s.user_id != user_id)?;
        Ok(())
    }

    fn start_login(&self, user: &User, stage: Stage) -> Result<String, AuthError> {
        let token = random_token();
        let now = self.clock.now_ms();
        self.logins.put(
            &sha256_hex(token.as_bytes()),
            &LoginSession {
                account_id: user.account_id.clone(),
                user_id: user.id.clone(),
                created_ms: now,
                last_seen_ms: now,
                stage,
            },
        )?;
        Ok(token)
    }

    /// Changes the signed-in user's password. Every login session of the user ends; the
    /// caller gets a fresh one for the browser that made the change.
    pub async fn change_password(
        &self,
        who: &Principal,
        current: String,
        new: String,
        source: IpAddr,
    ) -> Result<(Principal, String), AuthError> {
        let user = self.user_record(&who.account_id, &who.user_id)?;
        if !self
            .verify_password(user.password_hash.clone(), current)
            .await?
        {
            self.record_by(
                who,
                AuditKind::PasswordChangeFailed,
                source,
                "wrong current password",
            );
            return Err(AuthError::BadCredentials);
        }
        let account = self.account(&who.account_id)?;
        password::check(
            &new,
            account.policy.password_min_length,
            &[&user.email, &user.display_name, &account.organisation],
        )?;
        if password::verify(&user.password_hash, &new) {
            return Err(AuthError::Invalid(
                "the new password must differ from the current one".into(),
            ));
        }
        let hash = self.hash_password(new).await?;
        let user = self.change_user(&who.account_id, &who.user_id, |u| {
            u.password_hash = hash.clone();
            u.must_change_password = false;
        })?;
        self.end_sessions_of(&user.id)?;
        let stage = match who.stage {
            Stage::SecondFactor => Stage::SecondFactor,
            _ => self.stage_after_second_factor(&user)?,
        };
        let token = self.start_login(&user, stage)?;
        self.committed(
            who,
            AuditKind::PasswordChanged,
            source,
            "by the user; all sign-ins ended",
        )
        .await?;
        Ok((self.principal(&user, &account, stage)?, token))
    }

    /// Starts (or restarts) TOTP enrolment for the signed-in user.
    pub fn begin_totp(&self, who: &Principal) -> Result<TotpEnrolment, AuthError> {
        let secret = totp::new_secret();
        let issuer = format!("Sightline ({})", who.organisation);
        let otpauth_uri = totp::provisioning_uri(&secret, &who.email, &issuer)
            .ok_or_else(|| AuthError::Invalid("cannot build the enrolment URI".into()))?;
        let base32 = totp::secret_base32(&secret);
        self.change_user(&who.account_id, &who.user_id, |u| {
            if !u.two_factor_enabled() {
                u.totp = Some(TotpState {
                    secret: secret.clone(),
                    enabled: false,
                    last_step: None,
                });
            }
        })
        .and_then(|u| {
            if u.totp
                .as_ref()
                .is_some_and(|t| t.enabled && t.secret != secret)
            {
                Err(AuthError::Conflict(
                    "two-factor sign-in is already set up; ask an admin to reset it".into(),
                ))
            } else {
                Ok(())
            }
        })?;
        Ok(TotpEnrolment {
            secret: base32,
            otpauth_uri,
        })
    }

    /// Confirms enrolment with a first code; returns the ten recovery codes (shown once).
    pub async fn confirm_totp(
        &self,
        who: &Principal,
        token: &str,
        code: &str,
        source: IpAddr,
    ) -> Result<(Principal, Vec<String>), AuthError> {
        let user = self.user_record(&who.account_id, &who.user_id)?;
        let pending = user
            .totp
            .as_ref()
            .filter(|t| !t.enabled)
            .ok_or_else(|| AuthError::Conflict("start enrolment first".into()))?;
        let step = totp::verify(&pending.secret, code, self.clock.now_ms() / 1000, None)
            .ok_or(AuthError::BadSecondFactor)?;
        let codes = totp::recovery_codes();
        let hashes: Vec<String> = codes
            .iter()
            .map(|c| sha256_hex(totp::normalise_recovery_code(c).as_bytes()))
            .collect();
        let user = self.change_user(&who.account_id, &who.user_id, |u| {
            if let Some(t) = u.totp.as_mut() {
                t.enabled = true;
                t.last_step = Some(step);
            }
            u.recovery_codes = hashes.clone();
        })?;
        let stage = match who.stage {
            Stage::EnrolTwoFactor => self.stage_after_second_factor(&user)?,
            other => other,
        };
        self.set_stage(&sha256_hex(token.as_bytes()), stage)?;
        self.committed(who, AuditKind::TwoFactorEnrolled, source, "")
            .await?;
        let account = self.account(&user.account_id)?;
        Ok((self.principal(&user, &account, stage)?, codes))
    }

    // ------------------------------------------------------------------------------
    // Administration (always within the admin's own account)

    pub fn list_users(&self, admin: &Principal) -> Result<Vec<UserView>, AuthError> {
        let mut users = self.users(&admin.account_id)?.values()?;
        users.sort_by(|a, b| a.email.cmp(&b.email));
        users.iter().map(|u| self.user_view(u)).collect()
    }

    /// The other active users of the caller's account, who can be invited into a session.
    pub fn colleagues(&self, who: &Principal) -> Result<Vec<ColleagueChoice>, AuthError> {
        let mut users: Vec<ColleagueChoice> = self
            .users(&who.account_id)?
            .values()?
            .into_iter()
            .filter(|u| u.active && u.id != who.user_id)
            .map(|u| ColleagueChoice {
                id: u.id,
                display_name: u.display_name,
            })
            .collect();
        users.sort_by(|a, b| a.display_name.cmp(&b.display_name));
        Ok(users)
    }

    /// One active user of the caller's account; others are not found.
    pub fn colleague(&self, who: &Principal, id: &str) -> Result<ColleagueChoice, AuthError> {
        let user = self.user_record(&who.account_id, id)?;
        if !user.active {
            return Err(AuthError::NotFound);
        }
        Ok(ColleagueChoice {
            id: user.id,
            display_name: user.display_name,
        })
    }

    pub fn get_user(&self, admin: &Principal, id: &str) -> Result<UserView, AuthError> {
        self.user_view(&self.user_record(&admin.account_id, id)?)
    }

    pub async fn create_user(
        &self,
        admin: &Principal,
        new: NewUser,
        source: IpAddr,
    ) -> Result<UserView, AuthError> {
        let account = self.account(&admin.account_id)?;
        let email = normalise_email(&new.email)?;
        let name = clean_name(&new.display_name, "display name")?;
        password::check(
            &new.password,
            account.policy.password_min_length,
            &[&email, &name, &account.organisation],
        )?;
        self.check_groups(&admin.account_id, &new.group_ids)?;
        let active = self
            .users(&admin.account_id)?
            .values()?
            .iter()
            .filter(|u| u.active)
            .count();
        if active >= account.subscription.seats as usize {
            return Err(AuthError::Conflict(format!(
                "all {} seats of the subscription are in use",
                account.subscription.seats
            )));
        }
        let hash = self.hash_password(new.password).await?;
        let user = self.insert_user(&account, email, name, new.role, hash, true, new.group_ids)?;
        self.committed(
            admin,
            AuditKind::UserCreated,
            source,
            format!("user {} as {:?}", user.id, user.role),
        )
        .await?;
        self.user_view(&user)
    }

    pub async fn update_user(
        &self,
        admin: &Principal,
        id: &str,
        change: UserChange,
        source: IpAddr,
    ) -> Result<UserView, AuthError> {
        let before = self.user_record(&admin.account_id, id)?;
        let name = change
            .display_name
            .as_deref()
            .map(|n| clean_name(n, "display name"))
            .transpose()?;
        if let Some(groups) = &change.group_ids {
            self.check_groups(&admin.account_id, groups)?;
        }
        if id == admin.user_id
            && (change.role == Some(Role::Technician) || change.active == Some(false))
        {
            return Err(AuthError::Conflict(
                "you cannot demote or deactivate yourself".into(),
            ));
        }
        let user = self.change_user(&admin.account_id, id, |u| {
            if let Some(name) = &name {
                u.display_name = name.clone();
            }
            if let Some(role) = change.role {
                u.role = role;
            }
            if let Some(active) = change.active {
                u.active = active;
            }
            if let Some(groups) = &change.group_ids {
                u.group_ids = groups.clone();
            }
        })?;
        // A change of role or deactivation takes effect at once, everywhere.
        if user.role != before.role || !user.active {
            self.end_sessions_of(&user.id)?;
        }
        self.committed(
            admin,
            AuditKind::UserUpdated,
            source,
            format!(
                "user {id}: role {:?}→{:?}, active {}→{}",
                before.role, user.role, before.active, user.active
            ),
        )
        .await?;
        self.user_view(&user)
    }

    pub async fn delete_user(
        &self,
        admin: &Principal,
        id: &str,
        source: IpAddr,
    ) -> Result<(), AuthError> {
        if id == admin.user_id {
            return Err(AuthError::Conflict("you cannot delete yourself".into()));
        }
        let user = self.user_record(&admin.account_id, id)?;
        self.end_sessions_of(id)?;
        self.users(&admin.account_id)?.remove(id)?;
        self.emails.remove(&user.email)?;
        self.failures.remove(&user.email)?;
        self.committed(admin, AuditKind::UserDeleted, source, format!("user {id}"))
            .await?;
        Ok(())
    }

    pub fn unlock(&self, admin: &Principal, id: &str, source: IpAddr) -> Result<(), AuthError> {
        let user = self.user_record(&admin.account_id, id)?;
        self.failures.remove(&user.email)?;
        self.audit.record(
            AuditKind::LockoutEnded,
            Some(&admin.account_id),
            Some(&user.id),
            Some(source),
            format!("unlocked by admin {}", admin.user_id),
        );
        Ok(())
    }

    /// Sets a new password chosen by the admin; the user must change it at next sign-in.
    pub async fn reset_password(
        &self,
        admin: &Principal,
        id: &str,
        new: String,
        source: IpAddr,
    ) -> Result<(), AuthError> {
        let user = self.user_record(&admin.account_id, id)?;
        let account = self.account(&admin.account_id)?;
        password::check(
            &new,
            account.policy.password_min_length,
            &[&user.email, &user.display_name, &account.organisation],
        )?;
        let hash = self.hash_password(new).await?;
        self.change_user(&admin.account_id, id, |u| {
            u.password_hash = hash.clone();
            u.must_change_password = true;
        })?;
        self.end_sessions_of(id)?;
        self.store.flush().await?;
        self.audit.record(
            AuditKind::PasswordReset,
            Some(&admin.account_id),
            Some(id),
            Some(source),
            format!("by admin {}", admin.user_id),
        );
        Ok(())
    }

    pub async fn reset_two_factor(
        &self,
        admin: &Principal,
        id: &str,
        source: IpAddr,
    ) -> Result<(), AuthError> {
        self.user_record(&admin.account_id, id)?;
        self.change_user(&admin.account_id, id, |u| {
            u.totp = None;
            u.recovery_codes.clear();
        })?;
        self.end_sessions_of(id)?;
        self.store.flush().await?;
        self.audit.record(
            AuditKind::TwoFactorReset,
            Some(&admin.account_id),
            Some(id),
            Some(source),
            format!("by admin {}", admin.user_id),
        );
        Ok(())
    }

    fn check_groups(&self, account_id: &str, ids: &[String]) -> Result<(), AuthError> {
        let groups = self.groups_collection(account_id)?;
        for id in ids {
            if groups.get(id)?.is_none() {
                return Err(AuthError::Invalid(format!("no such group: {id}")));
            }
        }
        Ok(())
    }

    pub fn list_groups(&self, who: &Principal) -> Result<Vec<Group>, AuthError> {
        let mut groups = self.groups_collection(&who.account_id)?.values()?;
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    pub async fn create_group(
        &self,
        admin: &Principal,
        name: &str,
        require_2fa: bool,
        see_group_history: bool,
        source: IpAddr,
    ) -> Result<Group, AuthError> {
        let group = Group {
            id: random_id(),
            name: clean_name(name, "group name")?,
            require_2fa,
            see_group_history,
        };
        self.groups_collection(&admin.account_id)?
            .put(&group.id, &group)?;
        self.committed(
            admin,
            AuditKind::GroupChanged,
            source,
            format!("group {} created (2FA required: {require_2fa})", group.id),
        )
        .await?;
        Ok(group)
    }

    pub async fn update_group(
        &self,
        admin: &Principal,
        id: &str,
        change: GroupChange,
        source: IpAddr,
    ) -> Result<Group, AuthError> {
        let name = change
            .name
            .as_deref()
            .map(|n| clean_name(n, "group name"))
            .transpose()?;
        let group = self
            .groups_collection(&admin.account_id)?
            .update(id, |g| {
                let mut g = g?;
                if let Some(name) = &name {
                    g.name = name.clone();
                }
                if let Some(v) = change.require_2fa {
                    g.require_2fa = v;
                }
                if let Some(v) = change.see_group_history {
                    g.see_group_history = v;
                }
                Some(g)
            })?
            .ok_or(AuthError::NotFound)?;
        self.committed(
            admin,
            AuditKind::GroupChanged,
            source,
            format!("group {id} changed (2FA required: {})", group.require_2fa),
        )
        .await?;
        Ok(group)
    }

    pub async fn delete_group(
        &self,
        admin: &Principal,
        id: &str,
        source: IpAddr,
    ) -> Result<(), AuthError> {
        self.groups_collection(&admin.account_id)?
            .remove(id)?
            .ok_or(AuthError::NotFound)?;
        let users = self.users(&admin.account_id)?;
        for user in users.values()? {
            if user.group_ids.iter().any(|g| g == id) {
                self.change_user(&admin.account_id, &user.id, |u| {
                    u.group_ids.retain(|g| g != id)
                })?;
            }
        }
        self.committed(
            admin,
            AuditKind::GroupChanged,
            source,
            format!("group {id} deleted"),
        )
        .await?;
        Ok(())
    }

    pub fn get_account(&self, who: &Principal) -> Result<Account, AuthError> {
        self.account(&who.account_id)
    }

    pub async fn update_account(
        &self,
        admin: &Principal,
        policy: Option<AccountPolicy>,
        subscription: Option<Subscription>,
        source: IpAddr,
    ) -> Result<Account, AuthError> {
        if let Some(p) = &policy {
            if !(password::FLOOR_LENGTH..=64).contains(&p.password_min_length) {
                return Err(AuthError::Invalid(
                    "the password minimum must be between 8 and 64".into(),
                ));
            }
            if !(1..=24 * 60).contains(&p.idle_timeout_mins)
                || !(1..=24 * 7).contains(&p.absolute_timeout_hours)
            {
                return Err(AuthError::Invalid(
                    "idle timeout must be 1–1440 minutes and absolute timeout 1–168 hours".into(),
                ));
            }
            if !(1..=MAX_SESSION_RETENTION_DAYS).contains(&p.session_retention_days) {
                return Err(AuthError::Invalid(format!(
                    "ended sessions may be kept 1–{MAX_SESSION_RETENTION_DAYS} days"
                )));
            }
        }
        let account = self
            .accounts
            .update(&admin.account_id, |a| {
                let mut a = a?;
                if let Some(p) = &policy {
                    a.policy = p.clone();
                }
                if let Some(s) = &subscription {
                    a.subscription = s.clone();
                }
                Some(a)
            })?
            .ok_or(AuthError::NotFound)?;
        self.committed(
            admin,
            AuditKind::AccountSettingsChanged,
            source,
            format!(
                "policy {:?}; subscription {:?}",
                account.policy, account.subscription
            ),
        )
        .await?;
        Ok(account)
    }

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

    /// Every account (retention sweeps and the operator's CLI).
    pub fn accounts(&self) -> Result<Vec<Account>, AuthError> {
        Ok(self.accounts.values()?)
    }

    /// Removes an account's identity records that live outside the account's own trees
    /// (the email index, sign-ins, lockout counters) and the account record itself. The
    /// account's trees go with its key (`Store::destroy_account`).
    pub fn forget_account(&self, account_id: &str) -> Result<(), AuthError> {
        for user in self.users(account_id)?.values()? {
            self.emails.remove(&user.email)?;
            self.failures.remove(&user.email)?;
        }
        self.logins.retain(|s| s.account_id != account_id)?;
        self.accounts.remove(account_id)?;
        Ok(())
    }

    pub fn user_views(&self, account_id: &str) -> Result<Vec<UserView>, AuthError> {
        let mut users = self.users(account_id)?.values()?;
        users.sort_by(|a, b| a.email.cmp(&b.email));
        users.iter().map(|u| self.user_view(u)).collect()
    }

    pub fn groups_of(&self, account_id: &str) -> Result<Vec<Group>, AuthError> {
        Ok(self.groups_collection(account_id)?.values()?)
    }

    pub fn account_record(&self, account_id: &str) -> Result<Account, AuthError> {
        self.accounts.get(account_id)?.ok_or(AuthError::NotFound)
    }

    // ------------------------------------------------------------------------------
    // Operator (CLI) helpers, used on a stopped appliance's data directory

    pub fn all_users(&self) -> Result<Vec<(Account, UserView)>, AuthError> {
        let mut out = Vec::new();
        for account in self.accounts.values()? {
            for user in self.users(&account.id)?.values()? {
                out.push((account.clone(), self.user_view(&user)?));
            }
        }
        Ok(out)
    }

    pub fn operator_user(&self, email: &str) -> Result<Principal, AuthError> {
        let email = normalise_email(email)?;
        let entry = self.emails.get(&email)?.ok_or(AuthError::NotFound)?;
        let user = self.user_record(&entry.account_id, &entry.user_id)?;
        let account = self.account(&user.account_id)?;
        self.principal(&user, &account, Stage::Complete)
    }

    /// An operator principal acting as admin of `account_id` (for CLI commands).
    pub fn operator_for(&self, account_id: &str) -> Result<Principal, AuthError> {
        let account = self.account(account_id)?;
        Ok(Principal {
            user_id: "operator".into(),
            account_id: account.id,
            email: String::new(),
            display_name: "operator".into(),
            organisation: account.organisation,
            role: Role::AccountAdmin,
            stage: Stage::Complete,
            group_ids: Vec::new(),
            two_factor_enabled: false,
            sees_group_history: true,
        })
    }

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
            Some(&who.account_id),
            Some(&who.user_id),
            Some(source),
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

    fn users(&self, account_id: &str) -> Result<Collection<User>, StoreError> {
        self.store.account(account_id).collection("users")
    }

    fn groups_collection(&self, account_id: &str) -> Result<Collection<Group>, StoreError> {
        self.store.account(account_id).collection("groups")
    }

    fn user_record(&self, account_id: &str, id: &str) -> Result<User, AuthError> {
        self.users(account_id)?.get(id)?.ok_or(AuthError::NotFound)
    }

    fn change_user(
        &self,
        account_id: &str,
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

    fn account(&self, account_id: &str) -> Result<Account, AuthError> {
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

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = OsRng.r#gen();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// 128 random bits as hex: ids that appear in URLs.
pub fn random_id() -> String {
    let bytes: [u8; 16] = OsRng.r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
