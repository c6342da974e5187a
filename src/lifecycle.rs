//! The data lifecycle: exports of an account's (or one customer's) content, deletion on
//! request within the configured window, automatic deletion after a subscription ends,
//! and account deletion by crypto-shredding. Every deletion is audited — what, when and
//! on whose request — never the content itself.

use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::{Actor, Audit, AuditKind};
use crate::auth::{Auth, AuthError, Principal};
use crate::clock::{SharedClock, UnixMillis};
use crate::config::{BackupConfig, RetentionConfig};
use crate::ids::{AccountId, SessionId, UserId};
use crate::live::{Live, LiveError};
use crate::store::backup;
use crate::store::{Collection, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("say what to delete: a session id or a customer reference")]
    NoScope,
    #[error("nothing matches")]
    NothingMatches,
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("export failed: {0}")]
    Export(std::io::Error),
    #[error("the key vault of the backups could not be rewritten: {0}")]
    Vault(String),
}

/// What an export or deletion covers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub session_id: Option<String>,
    pub customer_reference: Option<String>,
}

impl Scope {
    fn is_whole_account(&self) -> bool {
        self.session_id.is_none() && self.customer_reference.is_none()
    }

    fn describe(&self) -> String {
        match (&self.session_id, &self.customer_reference) {
            (Some(id), _) => format!("session {id}"),
            // The reference may name the customer: audit entries carry only its digest.
            (None, Some(r)) => format!(
                "customer reference #{}",
                &crate::auth::sha256_hex(r.as_bytes())[..12]
            ),
            (None, None) => "whole account".into(),
        }
    }
}

/// A deletion that was asked for and is due at `due_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeletionRequest {
    pub id: String,
    pub scope: Scope,
    pub requested_by: UserId,
    pub requested_ms: UnixMillis,
    pub due_ms: UnixMillis,
}

pub struct Lifecycle {
    store: Store,
    auth: Arc<Auth>,
    live: Arc<Live>,
    audit: Arc<Audit>,
    clock: SharedClock,
    retention: RetentionConfig,
    backup: BackupConfig,
    /// When the retention periods were last applied; they are applied hourly.
    last_expiry_ms: std::sync::Mutex<Option<UnixMillis>>,
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

impl Lifecycle {
    pub fn new(
        store: Store,
        auth: Arc<Auth>,
        live: Arc<Live>,
        audit: Arc<Audit>,
        clock: SharedClock,
        retention: RetentionConfig,
        backup: BackupConfig,
    ) -> Self {
        Self {
            store,
            auth,
            live,
            audit,
            clock,
            retention,
            backup,
            last_expiry_ms: std::sync::Mutex::new(None),
        }
    }

    fn requests(&self, account_id: &AccountId) -> Result<Collection<DeletionRequest>, StoreError> {
        self.store
            .account(account_id)
            .collection("deletion_requests")
    }

    /// Writes a tar archive with the scope's records as JSON and its files decrypted.
    /// `by`: the user who asked for it (none for the operator's CLI), for the audit log.
    pub fn export(
        &self,
        account_id: &AccountId,
        by: Option<&UserId>,
        scope: &Scope,
        out: impl Write,
    ) -> Result<(), LifecycleError> {
        let sessions = self.live.records(
            account_id,
            scope.session_id.as_deref(),
            scope.customer_reference.as_deref(),
        )?;
        if !scope.is_whole_account() && sessions.is_empty() {
            return Err(LifecycleError::NothingMatches);
        }
        let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        let audit: Vec<_> = self
            .audit
            .entries()?
            .into_iter()
            .filter(|e| e.account_id.as_deref() == Some(account_id))
            .filter(|e| scope.is_whole_account() || ids.iter().any(|id| e.detail.contains(id)))
            .collect();
        let mut tar = tar::Builder::new(out);
        let mut add = |name: &str, bytes: &[u8]| -> Result<(), LifecycleError> {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(self.clock.now_ms() / 1000);
            header.set_cksum();
            tar.append_data(&mut header, name, bytes)
                .map_err(LifecycleError::Export)
        };
        let json = |v: &dyn erased::Json| v.to_json();
        add(
            "manifest.json",
            &json(&serde_json::json!({
                "format": "sightline-export-1",
                "account_id": account_id,
                "exported_ms": self.clock.now_ms(),
                "scope": scope,
            })),
        )?;
        if scope.is_whole_account() {
            add(
                "account.json",
                &json(&self.auth.account_record(account_id)?),
            )?;
            add("users.json", &json(&self.auth.user_views(account_id)?))?;
            add("groups.json", &json(&self.auth.groups_of(account_id)?))?;
        }
        add("sessions.json", &json(&sessions))?;
        let mut transcripts = std::collections::BTreeMap::new();
        for session in &sessions {
            let lines = self.live.transcript(account_id, &session.id)?;
            if !lines.is_empty() {
                transcripts.insert(session.id.clone(), lines);
            }
        }
        add("transcripts.json", &json(&transcripts))?;
        let mut lines = Vec::new();
        for entry in &audit {
            lines.extend(json(entry));
            lines.push(b'\n');
        }
        add("audit.jsonl", &lines)?;
        let files = self.store.account(account_id);
        for name in files.file_names()? {
            let belongs = scope.is_whole_account() || ids.iter().any(|id| name.starts_with(id));
            if !belongs || name.ends_with("-body") || name.ends_with("-tail") {
                continue;
            }
            // A recording's three stored parts are exported as the one WebM file they form.
            if let Some(base) = name.strip_suffix("-head") {
                let mut webm = Vec::new();
                for part in ["head", "body", "tail"] {
                    webm.extend(
                        files
                            .get_file(&format!("{base}-{part}"))?
                            .unwrap_or_default(),
                    );
                }
                add(&format!("files/{base}.webm"), &webm)?;
            } else if let Some(content) = files.get_file(&name)? {
                add(&format!("files/{name}"), &content)?;
            }
        }
        tar.finish().map_err(LifecycleError::Export)?;
        drop(tar);
        self.audit.record(
            AuditKind::DataExported,
            by.map_or_else(
                || Actor::account(account_id),
                |user| Actor::user(account_id, user),
            ),
            format!("export of {}", scope.describe()),
        );
        Ok(())
    }

    /// Records a deletion request; it runs at once when the window is zero.
    pub async fn request_deletion(
        &self,
        who: &Principal,
        scope: Scope,
    ) -> Result<DeletionRequest, LifecycleError> {
        if scope.is_whole_account() {
            return Err(LifecycleError::NoScope);
        }
        let matching = self.live.records(
            &who.account_id,
            scope.session_id.as_deref(),
            scope.customer_reference.as_deref(),
        )?;
        if matching.is_empty() {
            return Err(LifecycleError::NothingMatches);
        }
        let now = self.clock.now_ms();
        let request = DeletionRequest {
            id: crate::auth::random_id(),
            scope,
            requested_by: who.user_id.clone(),
            requested_ms: now,
            due_ms: now + self.retention.deletion_delay_days * DAY_MS,
        };
        self.requests(&who.account_id)?.put(&request.id, &request)?;
        self.audit.record(
            AuditKind::DeletionRequested,
            Actor::user(&who.account_id, &who.user_id),
            format!(
                "deletion of {} requested, due {}",
                request.scope.describe(),
                crate::clock::rfc3339(request.due_ms)
            ),
        );
        if request.due_ms <= now {
            self.carry_out(&who.account_id, &request)?;
        }
        self.store.flush().await?;
        Ok(request)
    }

    pub fn pending(&self, account_id: &AccountId) -> Result<Vec<DeletionRequest>, LifecycleError> {
        let mut requests = self.requests(account_id)?.values()?;
        requests.sort_by_key(|r| r.due_ms);
        Ok(requests)
    }

    fn carry_out(
        &self,
        account_id: &AccountId,
        request: &DeletionRequest,
    ) -> Result<(), LifecycleError> {
        let sessions = self.live.records(
            account_id,
            request.scope.session_id.as_deref(),
            request.scope.customer_reference.as_deref(),
        )?;
        for session in &sessions {
            self.delete_session(account_id, &session.id)?;
        }
        self.requests(account_id)?.remove(&request.id)?;
        self.audit.record(
            AuditKind::ContentDeleted,
            Actor::user(account_id, &request.requested_by),
            format!(
                "{} deleted ({} sessions) on request of user {} made at {}",
                request.scope.describe(),
                sessions.len(),
                request.requested_by,
                crate::clock::rfc3339(request.requested_ms)
            ),
        );
        Ok(())
    }

    /// A session's record, chat, stills and recordings, and any other file of it.
    fn delete_session(
        &self,
        account_id: &AccountId,
        session_id: &SessionId,
    ) -> Result<(), LifecycleError> {
        let files = self.store.account(account_id);
        for name in files.file_names()? {
            if name.starts_with(session_id.as_str()) {
                files.remove_file(&name)?;
            }
        }
        self.live.delete_record(account_id, session_id)?;
        Ok(())
    }

    /// Deletes the account's sessions that ended longer ago than its retention period
    /// allows, each with an audit entry saying which and why (never what it held).
    fn expire_sessions(
        &self,
        account: &crate::auth::Account,
        now: UnixMillis,
    ) -> Result<usize, LifecycleError> {
        let days = u64::from(account.policy.session_retention_days);
        let mut deleted = 0;
        for session in self.live.records(&account.id, None, None)? {
            let Some(ended) = session.ended_ms else {
                continue;
            };
            if now < ended + days * DAY_MS {
                continue;
            }
            self.delete_session(&account.id, &session.id)?;
            self.audit.record(
                AuditKind::ContentDeleted,
                Actor::account(&account.id),
                format!(
                    "session {} deleted by retention: ended at {ended}, kept {days} days",
                    session.id
                ),
            );
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Applies the retention periods (ended sessions per account, the security log) if
    /// an hour has passed since they were last applied. Returns the sessions deleted.
    async fn expire(&self, now: UnixMillis) -> Result<usize, LifecycleError> {
        {
            let mut last = self
                .last_expiry_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| now < at + HOUR_MS) {
                return Ok(0);
            }
            *last = Some(now);
        }
        let mut deleted = 0;
        for account in self.auth.accounts()? {
            deleted += self.expire_sessions(&account, now)?;
        }
        let cutoff = now.saturating_sub(self.retention.audit_log_days * DAY_MS);
        self.audit.cut_before(cutoff)?;
        self.store.flush().await?;
        Ok(deleted)
    }

    /// Carries out due deletion requests and deletes accounts whose subscription ended
    /// long enough ago. Returns how many accounts were deleted.
    pub async fn sweep(&self) -> Result<usize, LifecycleError> {
        let now = self.clock.now_ms();
        let mut deleted = 0;
        for account in self.auth.accounts()? {
            for request in self.pending(&account.id)? {
                if request.due_ms <= now {
                    self.carry_out(&account.id, &request)?;
                }
            }
            let expired = account
                .subscription
                .ends_ms
                .is_some_and(|end| now >= end + self.retention.after_subscription_days * DAY_MS);
            if expired {
                self.delete_account(&account.id, "retention: subscription ended")
                    .await?;
                deleted += 1;
            }
        }
        self.expire(now).await?;
        self.store.flush().await?;
        Ok(deleted)
    }

    /// Deletes an account: its key first (crypto-shredding, also for existing backups,
    /// whose key vault is rewritten), then its records and files.
    pub async fn delete_account(
        &self,
        account_id: &AccountId,
        why: &str,
    ) -> Result<(), LifecycleError> {
        self.live.close_account(account_id)?;
        self.auth.forget_account(account_id)?;
        self.store.destroy_account(account_id).await?;
        if let (Some(dir), Some(recipient)) = (&self.backup.directory, &self.backup.recipient)
            && dir.exists()
        {
            backup::write_vault(&self.store, dir, recipient)
                .map_err(|e| LifecycleError::Vault(e.to_string()))?;
        }
        backup::rewrite_known_vault(&self.store, self.store.data_dir())
            .map_err(|e| LifecycleError::Vault(e.to_string()))?;
        self.audit.record(
            AuditKind::AccountDeleted,
            Actor::APPLIANCE,
            format!("account {account_id} deleted ({why}); its key was destroyed"),
        );
        Ok(())
    }
}

/// Serialises any record to JSON without making the export code generic.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap_or_default()
        }
    }
}
