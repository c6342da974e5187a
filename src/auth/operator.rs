//! What the appliance itself and its operator's CLI read and do across accounts: listing,
//! exports, forgetting an account, and acting as an account's admin offline.

use super::*;

impl Auth {
    /// Every account (retention sweeps and the operator's CLI).
    pub fn accounts(&self) -> Result<Vec<Account>, AuthError> {
        Ok(self.accounts.values()?)
    }

    /// Removes an account's identity records that live outside the account's own trees
    /// (the email index, sign-ins, lockout counters) and the account record itself. The
    /// account's trees go with its key (`Store::destroy_account`).
    pub fn forget_account(&self, account_id: &AccountId) -> Result<(), AuthError> {
        for user in self.users(account_id)?.values()? {
            self.emails.remove(&user.email)?;
            self.failures.remove(&user.email)?;
        }
        self.logins.retain(|s| s.account_id != account_id)?;
        self.accounts.remove(account_id)?;
        Ok(())
    }

    pub fn user_views(&self, account_id: &AccountId) -> Result<Vec<UserView>, AuthError> {
        let mut users = self.users(account_id)?.values()?;
        users.sort_by(|a, b| a.email.cmp(&b.email));
        users.iter().map(|u| self.user_view(u)).collect()
    }

    pub fn groups_of(&self, account_id: &AccountId) -> Result<Vec<Group>, AuthError> {
        Ok(self.groups_collection(account_id)?.values()?)
    }

    pub fn account_record(&self, account_id: &AccountId) -> Result<Account, AuthError> {
        self.accounts.get(account_id)?.ok_or(AuthError::NotFound)
    }

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
    pub fn operator_for(&self, account_id: &AccountId) -> Result<Principal, AuthError> {
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
}
