//! What a signed-in user does for themself: change the password, enrol two-factor.

use super::*;

impl Auth {
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
}
