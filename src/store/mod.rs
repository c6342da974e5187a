//! The appliance's persistent state, behind a narrow interface so that the engine (redb,
//! see [`engine`]; PostgreSQL for several nodes) can change without touching callers.
//!
//! Records are typed: a [`Collection`] stores one serde type under string keys. Global
//! collections hold what must be found before an account is known (users by email,
//! invitation capabilities); everything else lives in per-account collections obtained
//! through [`Store::account`], so a lookup can never reach another account's records.
//!
//! Everything is encrypted at rest (see [`keys`]): each value is sealed with its owner's
//! AES-256-GCM key, bound to its tree and key; record keys are stored as HMACs, so emails
//! or PINs used as keys never reach the disk either. Files (snapshots, recordings) are
//! age streams to the owning account. Deleting an account destroys its key first.
//!
//! Durability: a write is visible at once and durable after the next [`Store::flush`],
//! which returns only once every earlier write is fsync'd; concurrent flushes share one
//! fsync. Nothing leaves the appliance before the flush: the HTTP layer flushes before
//! every response and the signaling socket before every message it sends, so an
//! acknowledged write, and the audit entry written with it, survive a crash.

mod account;
pub mod backup;
mod collection;
pub mod engine;
pub mod keys;

use std::fs;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use account::{AccountStore, FileWriter};
pub use collection::{Batch, Collection};
use engine::{Engine, STORE_FILE};
use keys::{KeyError, KeyRing, MasterKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store in {path} is in use by a running appliance; stop it first")]
    InUse { path: String },
    #[error(
        "the store file {path} is damaged ({reason}). It was left as it is: restore the newest \
         backup into an empty data directory (`sightline restore`, see the README) and point \
         data_dir at it"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "{path} holds a store written by Sightline 0.1 (the sled engine), which this release \
         cannot read. Nothing was changed. Upgrade through a backup: see \"Upgrading from 0.1\" \
         in the README"
    )]
    LegacyEngine { path: PathBuf },
    #[error("store I/O failed: {0}")]
    Engine(#[from] redb::Error),
    #[error("the store is closed (the appliance is shutting down)")]
    Closed,
    #[error("a record in {collection} cannot be read (damaged, or sealed under another key)")]
    Corrupt { collection: String },
    #[error("cannot encode record: {0}")]
    Encode(serde_json::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("file I/O failed for {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

const KEYS_TREE: &str = "keys";
const APPLIANCE_OWNER: &str = "appliance";

/// The engine's page cache when the config does not say (`[store] cache_mib`): the
/// working set of an appliance is far smaller than redb's 1 GiB default.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

#[derive(Clone)]
pub struct Store {
    engine: Arc<Engine>,
    keys: Arc<KeyRing>,
    data_dir: PathBuf,
}

impl Store {
    /// Opens the store under `data_dir` with the master key from a systemd credential or
    /// `data_dir/master.key` (created on first start).
    pub fn open_data_dir(data_dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        refuse_legacy(data_dir)?;
        let opened = Self::open_with(data_dir, MasterKey::load_or_create(data_dir)?, cache_bytes);
        let path = data_dir.join(keys::MASTER_KEY_FILE);
        let pending = path.with_extension("key.new");
        match opened {
            // A rotation re-wrapped the keys but stopped before replacing the key file:
            // the new key is the right one, so finish the rotation.
            Err(StoreError::Key(KeyError::Unwrap)) if pending.exists() => {
                let store = Self::open_with(data_dir, MasterKey::read(&pending)?, cache_bytes)?;
                fs::rename(&pending, &path).map_err(|source| StoreError::File {
                    path: path.clone(),
                    source,
                })?;
                Ok(store)
            }
            Ok(store) => {
                // The rotation never got as far as re-wrapping: discard its key.
                if pending.exists() {
                    let _ = fs::remove_file(&pending);
                }
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the store under `data_dir` with the default cache.
    pub fn open(data_dir: &Path, master: MasterKey) -> Result<Self, StoreError> {
        Self::open_with(data_dir, master, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store in `data_dir/store.redb`, refusing a data directory that still
    /// holds the 0.1 release's sled store (its `store/` folder) rather than starting empty
    /// beside it.
    pub fn open_with(
        data_dir: &Path,
        master: MasterKey,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        refuse_legacy(data_dir)?;
        let path = data_dir.join(STORE_FILE);
        // A handle dropped a moment ago (a restart, a restore) may still be held by a task
        // that is ending; only a lock held longer means another appliance has it.
        let mut waited = std::time::Duration::ZERO;
        let engine = loop {
            match Engine::open(&path, cache_bytes) {
                Err(StoreError::InUse { .. }) if waited < std::time::Duration::from_secs(2) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    waited += std::time::Duration::from_millis(50);
                }
                other => break Arc::new(other?),
            }
        };
        let keys = Arc::new(KeyRing::new(master, engine.clone()));
        let store = Self {
            engine,
            keys,
            data_dir: data_dir.to_owned(),
        };
        // Proves the master key matches the store before anything else runs.
        store.keys.get_or_create(APPLIANCE_OWNER)?;
        store.flush_blocking()?;
        Ok(store)
    }

    /// Runs `change` as one transaction over any collections of this store: all of its
    /// writes or none (e.g. a checkpoint and the entries it replaces).
    pub fn batch<R>(
        &self,
        change: impl FnOnce(&mut Batch<'_, '_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.engine.write(|writes| change(&mut Batch { writes }))
    }

    /// Whether `data_dir` holds a store (of this release or the legacy one).
    pub fn exists_in(data_dir: &Path) -> bool {
        data_dir.join(STORE_FILE).exists() || data_dir.join("store").exists()
    }

    /// A collection shared by the whole appliance.
    pub fn global<T>(&self, name: &str) -> Result<Collection<T>, StoreError> {
        self.collection(APPLIANCE_OWNER, format!("global/{name}"))
    }

    /// The age recipient of files only the appliance itself may read (see
    /// [`Self::decrypt_for_appliance`]).
    pub fn appliance_recipient(&self) -> Result<String, StoreError> {
        Ok(self.keys.get_or_create(APPLIANCE_OWNER)?.file_recipient())
    }

    /// The plaintext of an age file encrypted to [`Self::appliance_recipient`]; `None` when
    /// it was encrypted to another (an older data directory, a restored one).
    pub fn decrypt_for_appliance(&self, sealed: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.keys.get_or_create(APPLIANCE_OWNER)?;
        let mut out = Vec::new();
        Ok(key.decrypt_stream(sealed, &mut out).ok().map(|()| out))
    }

    /// The collections of one account.
    pub fn account(&self, account_id: &str) -> AccountStore {
        AccountStore {
            store: self.clone(),
            account_id: account_id.to_owned(),
        }
    }

    fn collection<T>(&self, owner: &str, tree_name: String) -> Result<Collection<T>, StoreError> {
        Ok(Collection {
            engine: self.engine.clone(),
            key: self.keys.get_or_create(owner)?,
            name: tree_name,
            _record: PhantomData,
        })
    }

    /// Deletes an account by destroying its key first (its records and files are then
    /// unreadable everywhere, backups included), then removing them physically.
    pub async fn destroy_account(&self, account_id: &str) -> Result<(), StoreError> {
        self.keys.destroy(account_id)?;
        self.engine.drop_trees(&format!("account/{account_id}/"))?;
        let files = self.files_dir(account_id);
        if files.exists() {
            fs::remove_dir_all(&files).map_err(|source| StoreError::File {
                path: files.clone(),
                source,
            })?;
        }
        self.flush().await
    }

    /// Makes every earlier write durable (one fsync shared by everyone waiting at the
    /// time). Called before anything that acknowledges a write leaves the appliance, and
    /// on shutdown; free when nothing is pending.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.engine.is_synced() {
            return Ok(());
        }
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.sync()).await {
            Ok(result) => result,
            // The sync itself panicked or the runtime is going away: do it here.
            Err(_) => self.engine.sync(),
        }
    }

    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.engine.sync()
    }

    /// Flushes and releases the store file at once (shutdown): tasks still holding the
    /// store get [`StoreError::Closed`] instead of keeping the next start waiting.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.flush().await?;
        self.engine.close()
    }

    /// (writes so far, writes durable so far); see [`Engine::marks`].
    pub fn durability_marks(&self) -> (u64, u64) {
        self.engine.marks()
    }

    /// Bytes used on disk by the engine.
    pub fn size_on_disk(&self) -> u64 {
        self.engine.size_on_disk()
    }

    /// Re-wraps every account key under `new_master`; the caller then replaces the key file.
    pub fn rotate_master(&self, new_master: MasterKey) -> Result<(), StoreError> {
        self.keys.rewrap(new_master)
    }

    fn files_dir(&self, account_id: &str) -> PathBuf {
        self.data_dir.join("files").join(account_id)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn keyring(&self) -> &KeyRing {
        &self.keys
    }
}

/// A data directory of the 0.1 release holds its sled store in `store/`; starting an
/// empty store beside it would look like lost data.
fn refuse_legacy(data_dir: &Path) -> Result<(), StoreError> {
    let legacy = data_dir.join("store");
    if legacy.join("conf").exists() || legacy.join("db").exists() {
        return Err(StoreError::LegacyEngine { path: legacy });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(dir, MasterKey::generate()).expect("open")
    }

    #[test]
    fn account_collections_do_not_see_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let a = store
            .account("a")
            .collection::<String>("sessions")
            .expect("a");
        let b = store
            .account("b")
            .collection::<String>("sessions")
            .expect("b");
        a.put("s1", &"secret of a".to_owned()).expect("put");
        assert_eq!(b.get("s1").expect("get"), None);
        assert_eq!(a.get("s1").expect("get").as_deref(), Some("secret of a"));
    }

    #[test]
    fn insert_new_refuses_an_existing_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let c = store.global::<u32>("c").expect("c");
        assert!(c.insert_new("k", &1).expect("first"));
        assert!(!c.insert_new("k", &2).expect("second"));
        assert_eq!(c.get("k").expect("get"), Some(1));
    }

    #[test]
    fn paired_inserts_happen_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let index = store.global::<String>("index").expect("index");
        let records = store
            .account("a")
            .collection::<u32>("records")
            .expect("records");
        assert!(
            index
                .insert_new_with("k", &"r1".to_owned(), &records, "r1", &1)
                .expect("first")
        );
        assert!(
            !index
                .insert_new_with("k", &"r2".to_owned(), &records, "r2", &2)
                .expect("taken")
        );
        assert_eq!(
            records.get("r2").expect("get"),
            None,
            "nothing written when the claim fails"
        );
        assert_eq!(records.get("r1").expect("get"), Some(1));
    }

    #[test]
    fn update_applies_change_atomically_and_can_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let c = store.global::<u32>("c").expect("c");
        c.put("k", &1).expect("put");
        let new = c.update("k", |v| v.map(|n| n + 1)).expect("update");
        assert_eq!(new, Some(2));
        c.update("k", |_| None).expect("remove");
        assert_eq!(c.get("k").expect("get"), None);
    }

    #[test]
    fn a_value_copied_to_another_key_or_account_fails_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let a = store.account("a").collection::<String>("notes").expect("a");
        let b = store.account("b").collection::<String>("notes").expect("b");
        a.put("one", &"first".to_owned()).expect("put");
        a.put("two", &"second".to_owned()).expect("put");
        let raw_one = store
            .engine()
            .get(&a.name, &a.physical("one"))
            .expect("get")
            .expect("raw");
        // Copy the sealed bytes of "one" over "two" in the same collection…
        store
            .engine()
            .write(|w| w.insert(&a.name, &a.physical("two"), &raw_one))
            .expect("insert");
        assert!(matches!(a.get("two"), Err(StoreError::Corrupt { .. })));
        // …and into another account's collection under the same name.
        store
            .engine()
            .write(|w| w.insert(&b.name, &b.physical("one"), &raw_one))
            .expect("insert");
        assert!(matches!(b.get("one"), Err(StoreError::Corrupt { .. })));
        assert_eq!(a.get("one").expect("get").as_deref(), Some("first"));
    }

    #[test]
    fn destroying_an_account_makes_its_records_and_files_unreadable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let acct = store.account("gone");
        acct.collection::<String>("notes")
            .expect("c")
            .put("n", &"note".to_owned())
            .expect("put");
        acct.put_file("snap", b"picture").expect("file");
        assert_eq!(
            acct.get_file("snap").expect("get").as_deref(),
            Some(&b"picture"[..])
        );
        futures_executor(store.destroy_account("gone")).expect("destroy");
        assert_eq!(
            acct.collection::<String>("notes")
                .expect("c")
                .get("n")
                .expect("get"),
            None
        );
        assert_eq!(acct.get_file("snap").expect("get"), None);
    }

    #[test]
    fn the_wrong_master_key_cannot_open_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            store
                .account("a")
                .collection::<u8>("x")
                .expect("c")
                .put("k", &1)
                .expect("put");
        }
        let err = Store::open(dir.path(), MasterKey::generate())
            .err()
            .expect("refused");
        assert!(matches!(err, StoreError::Key(KeyError::Unwrap)), "{err}");
    }

    fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }
}
