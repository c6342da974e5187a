//! Setting up: the one-time setup code, the first account and its admin, and accounts the
//! operator creates.

use super::*;
use crate::audit::Actor;

impl Auth {
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
                Actor::stranger(source),
                "wrong, used or expired setup code",
            );
            return Err(AuthError::BadSetupCode);
        }

        let password_hash = self.hash_password(request.password).await?;
        let account = self.insert_account(organisation)?;
        let user = self.insert_user(
            &account,
            UserDraft {
                email,
                display_name,
                role: Role::AccountAdmin,
                password_hash,
                must_change_password: false,
                group_ids: Vec::new(),
            },
        )?;
        let token = self.start_login(&user, Stage::Complete)?;
        self.store.flush().await?;
        self.audit.record(
            AuditKind::SetupCompleted,
            Actor::user(&account.id, &user.id).at(source),
            "first account admin created",
        );
        Ok((self.principal(&user, &account, Stage::Complete)?, token))
    }

    /// Creates the first account and its admin without the setup page (`sightline init`,
    /// for unattended installs): with the password the operator chose, checked by the same
    /// rule as on the setup page, or else a random one the admin must change at first
    /// sign-in, which is returned. `None` once any account exists: nothing is changed.
    pub fn initialise(
        &self,
        organisation: &str,
        admin_email: &str,
        admin_name: &str,
        password: Option<&str>,
    ) -> Result<Option<(Account, User, Option<String>)>, AuthError> {
        if !self.setup_needed() {
            return Ok(None);
        }
        let temporary = password.is_none().then(temporary_password);
        let chosen = password.or(temporary.as_deref()).unwrap_or_default();
        let (account, user) = self.insert_account_with_admin(
            organisation,
            admin_email,
            admin_name,
            chosen,
            temporary.is_some(),
        )?;
        self.audit.record(
            AuditKind::SetupCompleted,
            Actor::account(&account.id),
            format!("first account admin {} created by sightline init", user.id),
        );
        self.store.flush_blocking()?;
        Ok(Some((account, user, temporary)))
    }

    /// Creates an account with its first admin (the operator's CLI). The admin's password
    /// is a random one they must change at first sign-in; it is returned for handing over.
    pub fn create_account(
        &self,
        organisation: &str,
        admin_email: &str,
        admin_name: &str,
    ) -> Result<(Account, User, String), AuthError> {
        let temporary = temporary_password();
        let (account, user) = self.insert_account_with_admin(
            organisation,
            admin_email,
            admin_name,
            &temporary,
            true,
        )?;
        self.audit.record(
            AuditKind::AccountCreated,
            Actor::account(&account.id),
            format!("account created by the operator with admin {}", user.id),
        );
        self.store.flush_blocking()?;
        Ok((account, user, temporary))
    }

    /// A new account and its admin. A password the operator chose must pass the password
    /// rule; a temporary one must be changed at first sign-in.
    fn insert_account_with_admin(
        &self,
        organisation: &str,
        admin_email: &str,
        admin_name: &str,
        password: &str,
        temporary: bool,
    ) -> Result<(Account, User), AuthError> {
        let organisation = clean_name(organisation, "organisation")?;
        let email = normalise_email(admin_email)?;
        let display_name = clean_name(admin_name, "display name")?;
        if !temporary {
            password::check(
                password,
                password::FLOOR_LENGTH,
                &[&email, &display_name, &organisation],
            )?;
        }
        let password_hash = password::hash(password).ok_or(AuthError::Hashing)?;
        let account = self.insert_account(organisation)?;
        let user = self.insert_user(
            &account,
            UserDraft {
                email,
                display_name,
                role: Role::AccountAdmin,
                password_hash,
                must_change_password: temporary,
                group_ids: Vec::new(),
            },
        )?;
        Ok((account, user))
    }

    pub(super) fn insert_account(&self, organisation: String) -> Result<Account, AuthError> {
        let account = Account {
            id: AccountId::random(),
            organisation,
            created_ms: self.clock.now_ms(),
            policy: AccountPolicy::default(),
            subscription: Subscription::default(),
        };
        self.accounts.put(&account.id, &account)?;
        Ok(account)
    }

    pub(super) fn insert_user(
        &self,
        account: &Account,
        draft: UserDraft,
    ) -> Result<User, AuthError> {
        let UserDraft {
            email,
            display_name,
            role,
            password_hash,
            must_change_password,
            group_ids,
        } = draft;
        let user = User {
            id: UserId::random(),
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
}

/// A user about to be stored, as the caller decided it; the id, dates and second factor
/// come at insertion.
pub(super) struct UserDraft {
    pub(super) email: String,
    pub(super) display_name: String,
    pub(super) role: Role,
    pub(super) password_hash: String,
    pub(super) must_change_password: bool,
    pub(super) group_ids: Vec<String>,
}
