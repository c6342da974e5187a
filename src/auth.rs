//! Who may use the console: the first-run setup code, passwords (argon2id), login
//! sessions held server-side behind an opaque cookie, and the principal every API call
//! runs as.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::audit::{Audit, AuditKind, GuessThrottle};
use crate::clock::{SharedClock, UnixMillis};
use crate::store::{Collection, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the appliance is already set up")]
    AlreadySetUp,
    #[error("the setup code is wrong, used or expired")]
    BadSetupCode,
    #[error("email or password is wrong")]
    BadCredentials,
    #[error("not signed in or the sign-in has expired")]
    Unauthenticated,
    #[error("too many attempts from this address; try again later")]
    Throttled,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub organisation: String,
    pub created_ms: UnixMillis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: String,
    pub created_ms: UnixMillis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailIndexEntry {
    account_id: String,
    user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoginSession {
    account_id: String,
    user_id: String,
    created_ms: UnixMillis,
    last_seen_ms: UnixMillis,
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

const IDLE_TIMEOUT_MS: u64 = 30 * 60_000;
const ABSOLUTE_TIMEOUT_MS: u64 = 12 * 3_600_000;
const SETUP_KEY: &str = "setup";
/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud is unambiguous.
const CODE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub struct Auth {
    accounts: Collection<Account>,
    emails: Collection<EmailIndexEntry>,
    logins: Collection<LoginSession>,
    meta: Collection<SetupState>,
    store: Store,
    clock: SharedClock,
    audit: Arc<Audit>,
    throttle: Arc<GuessThrottle>,
    setup_code_ttl_ms: u64,
    /// Bounds concurrent argon2 work so that a login flood cannot take every core.
    hashing: Semaphore,
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
            meta: store.global("meta")?,
            store: store.clone(),
            clock,
            audit,
            throttle,
            setup_code_ttl_ms: setup_code_ttl_secs * 1000,
            hashing: Semaphore::new(workers.div_ceil(2)),
        })
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
        let mut rng = OsRng;
        let raw: String = (0..12)
            .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
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
        if !self.throttle.allows(source) {
            return Err(AuthError::Throttled);
        }
        if !self.setup_needed() {
            return Err(AuthError::AlreadySetUp);
        }
        let email = normalise_email(&request.email)?;
        check_password_floor(&request.password)?;
        let display_name = clean_name(&request.display_name, "display name")?;
        let organisation = clean_name(&request.organisation, "organisation")?;

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
            if self.throttle.fail(source) {
                self.audit.record(
                    AuditKind::SourceThrottled,
                    None,
                    None,
                    Some(source),
                    "setup code guessing",
                );
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
        let account = Account {
            id: random_id(),
            organisation,
            created_ms: now,
        };
        let user = User {
            id: random_id(),
            account_id: account.id.clone(),
            email: email.clone(),
            display_name,
            role: Role::AccountAdmin,
            password_hash,
            created_ms: now,
        };
        self.accounts.put(&account.id, &account)?;
        self.users(&account.id)?.put(&user.id, &user)?;
        self.emails.put(
            &email,
            &EmailIndexEntry {
                account_id: account.id.clone(),
                user_id: user.id.clone(),
            },
        )?;
        let token = self.start_login(&user)?;
        self.store.flush().await?;
        self.audit.record(
            AuditKind::SetupCompleted,
            Some(&account.id),
            Some(&user.id),
            Some(source),
            "first account admin created",
        );
        Ok((self.principal(&user, &account), token))
    }

    pub async fn login(
        &self,
        email: &str,
        password: String,
        source: IpAddr,
    ) -> Result<(Principal, String), AuthError> {
        let email = normalise_email(email).unwrap_or_default();
        let found = match self.emails.get(&email)? {
            Some(entry) => self.users(&entry.account_id)?.get(&entry.user_id)?,
            None => None,
        };
        // Unknown emails cost the same hashing work as known ones, so that timing does
        // not reveal which addresses have users.
        let hash = found
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
        let verified = self.verify_password(hash, password).await?;
        match found {
            Some(user) if verified => {
                let account = self.account(&user.account_id)?;
                let token = self.start_login(&user)?;
                self.audit.record(
                    AuditKind::LoginSucceeded,
                    Some(&user.account_id),
                    Some(&user.id),
                    Some(source),
                    "",
                );
                Ok((self.principal(&user, &account), token))
            }
            other => {
                self.audit.record(
                    AuditKind::LoginFailed,
                    other.as_ref().map(|u| u.account_id.as_str()),
                    other.as_ref().map(|u| u.id.as_str()),
                    Some(source),
                    if other.is_some() {
                        "wrong password"
                    } else {
                        "unknown email"
                    },
                );
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// Resolves a login cookie to its principal, enforcing idle and absolute timeouts.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let key = sha256_hex(token.as_bytes());
        let now = self.clock.now_ms();
        let session = self
            .logins
            .update(&key, |s| {
                let mut s = s?;
                if now >= s.last_seen_ms + IDLE_TIMEOUT_MS
                    || now >= s.created_ms + ABSOLUTE_TIMEOUT_MS
                {
                    return None;
                }
                s.last_seen_ms = now;
                Some(s)
            })?
            .ok_or(AuthError::Unauthenticated)?;
        let user = self
            .users(&session.account_id)?
            .get(&session.user_id)?
            .ok_or(AuthError::Unauthenticated)?;
        let account = self.account(&user.account_id)?;
        Ok(self.principal(&user, &account))
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

    fn start_login(&self, user: &User) -> Result<String, AuthError> {
        let token = random_token();
        let now = self.clock.now_ms();
        self.logins.put(
            &sha256_hex(token.as_bytes()),
            &LoginSession {
                account_id: user.account_id.clone(),
                user_id: user.id.clone(),
                created_ms: now,
                last_seen_ms: now,
            },
        )?;
        Ok(token)
    }

    fn users(&self, account_id: &str) -> Result<Collection<User>, StoreError> {
        self.store.account(account_id).collection("users")
    }

    fn account(&self, account_id: &str) -> Result<Account, AuthError> {
        self.accounts
            .get(account_id)?
            .ok_or(AuthError::Unauthenticated)
    }

    fn principal(&self, user: &User, account: &Account) -> Principal {
        Principal {
            user_id: user.id.clone(),
            account_id: user.account_id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            organisation: account.organisation.clone(),
            role: user.role,
        }
    }

    async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| AuthError::Hashing)?;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| AuthError::Hashing)?
    }

    async fn verify_password(&self, hash: String, password: String) -> Result<bool, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| AuthError::Hashing)?;
        tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .map_err(|_| AuthError::Hashing)
    }
}

/// OWASP's minimum for argon2id: 19 MiB, two passes, one lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| AuthError::Hashing)
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

/// The floor every password must meet; the full policy (per-account minimum, common
/// passwords) builds on it.
pub fn check_password_floor(password: &str) -> Result<(), AuthError> {
    let chars = password.chars().count();
    if chars < 8 {
        return Err(AuthError::Invalid(
            "the password must have at least 8 characters".into(),
        ));
    }
    if chars > 128 {
        return Err(AuthError::Invalid(
            "the password may have at most 128 characters".into(),
        ));
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(AuthError::Invalid(
            "the password must contain letters and digits".into(),
        ));
    }
    Ok(())
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
    fn password_floor() {
        assert!(check_password_floor("short1").is_err());
        assert!(check_password_floor("lettersonly").is_err());
        assert!(check_password_floor("1234567890").is_err());
        assert!(check_password_floor("letters4andDigits").is_ok());
        assert!(check_password_floor(&"a1".repeat(32)).is_ok());
    }

    #[test]
    fn hash_round_trip_uses_argon2id_with_owasp_parameters() {
        let hash = hash_password("correct horse 9").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(&hash, "correct horse 9"));
        assert!(!verify_password(&hash, "correct horse 8"));
        assert!(!verify_password("not a hash", "x"));
    }

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
}
