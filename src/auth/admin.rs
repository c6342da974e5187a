//! The account admin's work: users, groups and the account's settings (and the colleague
//! list technicians pick from).

use super::setup::UserDraft;
use super::*;
use crate::audit::Actor;

impl Auth {
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
    pub fn colleague(&self, who: &Principal, id: &UserId) -> Result<ColleagueChoice, AuthError> {
        let user = self.user_record(&who.account_id, id)?;
        if !user.active {
            return Err(AuthError::NotFound);
        }
        Ok(ColleagueChoice {
            id: user.id,
            display_name: user.display_name,
        })
    }

    pub fn get_user(&self, admin: &Principal, id: &UserId) -> Result<UserView, AuthError> {
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
        let user = self.insert_user(
            &account,
            UserDraft {
                email,
                display_name: name,
                role: new.role,
                password_hash: hash,
                must_change_password: true,
                group_ids: new.group_ids,
            },
        )?;
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
        id: &UserId,
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
        if admin.user_id == id
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
        id: &UserId,
        source: IpAddr,
    ) -> Result<(), AuthError> {
        if admin.user_id == id {
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

    pub fn unlock(&self, admin: &Principal, id: &UserId, source: IpAddr) -> Result<(), AuthError> {
        let user = self.user_record(&admin.account_id, id)?;
        self.failures.remove(&user.email)?;
        self.audit.record(
            AuditKind::LockoutEnded,
            Actor::user(&admin.account_id, &user.id).at(source),
            format!("unlocked by admin {}", admin.user_id),
        );
        Ok(())
    }

    /// Sets a new password chosen by the admin; the user must change it at next sign-in.
    pub async fn reset_password(
        &self,
        admin: &Principal,
        id: &UserId,
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
            Actor::user(&admin.account_id, id).at(source),
            format!("by admin {}", admin.user_id),
        );
        Ok(())
    }

    pub async fn reset_two_factor(
        &self,
        admin: &Principal,
        id: &UserId,
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
            Actor::user(&admin.account_id, id).at(source),
            format!("by admin {}", admin.user_id),
        );
        Ok(())
    }

    pub(super) fn check_groups(
        &self,
        account_id: &AccountId,
        ids: &[String],
    ) -> Result<(), AuthError> {
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
}
