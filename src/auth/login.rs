//! Signing in and out: password, lockout, the second factor, the login session and its
//! stages, and ending sign-ins.

use super::*;
use crate::audit::Actor;

impl Auth {
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
                let locked_until = self.count_failure(&email, now)?;
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
                    Actor {
                        account_id,
                        user_id,
                        source: Some(source),
                    },
                    if other.is_some() {
                        "wrong password"
                    } else {
                        "unknown email"
                    },
                );
                if let Some(until) = locked_until {
                    self.counters
                        .lockouts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.audit.record(
                        AuditKind::LoginLocked,
                        Actor {
                            account_id,
                            user_id,
                            source: Some(source),
                        },
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
            Actor::user(&user.account_id, &user.id).at(source),
            format!("stage {stage:?}"),
        );
        Ok((self.principal(&user, &account, stage)?, token))
    }

    /// Clears a lockout whose time has run out and records its end.
    pub(super) fn end_lockout_if_due(&self, email: &str) -> Result<(), AuthError> {
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
                Actor {
                    account_id: user.as_ref().map(|u| u.account_id.as_str()),
                    user_id: user.as_ref().map(|u| u.user_id.as_str()),
                    source: None,
                },
                "lockout time ran out",
            );
        }
        Ok(())
    }

    pub(super) fn locked_until(&self, email: &str) -> Result<Option<UnixMillis>, AuthError> {
        let now = self.clock.now_ms();
        Ok(self
            .failures
            .get(email)?
            .and_then(|f| f.locked_until_ms)
            .filter(|until| now < *until))
    }

    pub(super) fn stage_after_second_factor(&self, user: &User) -> Result<Stage, AuthError> {
        Ok(if user.must_change_password {
            Stage::ChangePassword
        } else if !user.two_factor_enabled() && self.requires_two_factor(user)? {
            Stage::EnrolTwoFactor
        } else {
            Stage::Complete
        })
    }

    pub(super) fn requires_two_factor(&self, user: &User) -> Result<bool, AuthError> {
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
                Actor::user(&user.account_id, &user.id).at(source),
                format!("{} recovery codes left", user.recovery_codes.len()),
            );
        } else {
            let locked_until = self.count_failure(&email, self.clock.now_ms())?;
            self.audit.record(
                AuditKind::SecondFactorFailed,
                Actor::user(&user.account_id, &user.id).at(source),
                "wrong or reused code",
            );
            if let Some(until) = locked_until {
                self.logins.remove(&key)?;
                self.audit.record(
                    AuditKind::LoginLocked,
                    Actor::user(&user.account_id, &user.id).at(source),
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

    /// Counts one more consecutive failure for `email` (a wrong password or second
    /// factor); returns when the lockout it caused ends, if it caused one.
    fn count_failure(&self, email: &str, now: u64) -> Result<Option<u64>, StoreError> {
        let failures = self.failures.update(email, |f| {
            let mut f = f.unwrap_or_default();
            f.count += 1;
            if f.count >= MAX_FAILURES {
                f.locked_until_ms = Some(now + LOCKOUT_MS);
            }
            Some(f)
        })?;
        Ok(failures.and_then(|f| f.locked_until_ms))
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

    pub(super) fn login_session(&self, key: &str) -> Result<LoginSession, AuthError> {
        self.logins.get(key)?.ok_or(AuthError::Unauthenticated)
    }

    pub(super) fn set_stage(&self, key: &str, stage: Stage) -> Result<(), AuthError> {
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
                Actor::user(&s.account_id, &s.user_id).at(source),
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

    pub(super) fn end_sessions_of(&self, user_id: &UserId) -> Result<(), AuthError> {
        self.logins.retain(|s| s.user_id != user_id)?;
        Ok(())
    }

    pub(super) fn start_login(&self, user: &User, stage: Stage) -> Result<String, AuthError> {
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
}
