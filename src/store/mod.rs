//! The appliance's persistent state, behind a narrow interface so that the engine (sled
//! today) could be replaced without touching callers.
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
//! Durability: [`Store::flush`] makes every earlier write durable. API handlers flush
//! before they answer a request that changed state, so an acknowledged write survives a
//! crash.

pub mod backup;
pub mod keys;

use std::fs;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use keys::{AccountKey, KeyError, KeyRing, MasterKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("the store in {path} is in use by a running appliance; stop it first")]
    InUse { path: String },
    #[error("store I/O failed: {0}")]
    Engine(#[from] sled::Error),
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

/// The store engine's in-memory page cache.
const STORE_CACHE_BYTES: u64 = 64 << 20;

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    keys: Arc<KeyRing>,
    data_dir: PathBuf,
}

impl Store {
    /// Opens the store under `data_dir` with the master key from a systemd credential or
    /// `data_dir/master.key` (created on first start).
    pub fn open_data_dir(data_dir: &Path) -> Result<Self, StoreError> {
        let opened = Self::open(data_dir, MasterKey::load_or_create(data_dir)?);
        let path = data_dir.join(keys::MASTER_KEY_FILE);
        let pending = path.with_extension("key.new");
        match opened {
            // A rotation re-wrapped the keys but stopped before replacing the key file:
            // the new key is the right one, so finish the rotation.
            Err(StoreError::Key(KeyError::Unwrap)) if pending.exists() => {
                let store = Self::open(data_dir, MasterKey::read(&pending)?)?;
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

    /// Opens the store under `data_dir` (the sled engine lives in `data_dir/store`).
    pub fn open(data_dir: &Path, master: MasterKey) -> Result<Self, StoreError> {
        let dir = data_dir.join("store");
        let open = || {
            // sled's default page cache is 1 GiB and fills with everything written; on a
            // small appliance that was most of its memory (90 MB resident after 1,000
            // sessions in the soak, 31 MB with 8 MiB). The working set is far smaller.
            sled::Config::new()
                .cache_capacity(STORE_CACHE_BYTES)
                .path(&dir)
                .open()
                .map_err(|source| {
                    let path = dir.display().to_string();
                    // sled holds an exclusive file lock while a process has the store open.
                    match &source {
                        sled::Error::Io(e) if e.to_string().contains("lock") => {
                            StoreError::InUse { path }
                        }
                        _ => StoreError::Open { path, source },
                    }
                })
        };
        // A handle dropped a moment ago (a restore, a restart) may still hold the lock
        // until its background flusher has ended; only a lock held longer means in use.
        let mut waited = std::time::Duration::ZERO;
        let db = loop {
            match open() {
                Err(StoreError::InUse { .. }) if waited < std::time::Duration::from_secs(2) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    waited += std::time::Duration::from_millis(50);
                }
                other => break other?,
            }
        };
        let keys = Arc::new(KeyRing::new(master, db.open_tree(KEYS_TREE)?));
        let store = Self {
            db,
            keys,
            data_dir: data_dir.to_owned(),
        };
        // Proves the master key matches the store before anything else runs.
        store.keys.get_or_create(APPLIANCE_OWNER)?;
        Ok(store)
    }

    /// A collection shared by the whole appliance.
    pub fn global<T>(&self, name: &str) -> Result<Collection<T>, StoreError> {
        self.collection(APPLIANCE_OWNER, format!("global/{name}"))
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
            tree: self.db.open_tree(tree_name.as_bytes())?,
            key: self.keys.get_or_create(owner)?,
            name: tree_name,
            _record: PhantomData,
        })
    }

    /// Deletes an account by destroying its key first (its records and files are then
    /// unreadable everywhere, backups included), then removing them physically.
    pub async fn destroy_account(&self, account_id: &str) -> Result<(), StoreError> {
        self.keys.destroy(account_id)?;
        let prefix = format!("account/{account_id}/");
        for name in self.db.tree_names() {
            if name.starts_with(prefix.as_bytes()) {
                self.db.drop_tree(&name)?;
            }
        }
        let files = self.files_dir(account_id);
        if files.exists() {
            fs::remove_dir_all(&files).map_err(|source| StoreError::File {
                path: files.clone(),
                source,
            })?;
        }
        self.flush().await
    }

    /// Makes every acknowledged write durable. Called before an answer that promises
    /// durability and on shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes used on disk by the engine.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
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

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    pub(crate) fn keyring(&self) -> &KeyRing {
        &self.keys
    }
}

/// The collections and files of one account; names are scoped so that no key of one
/// account can be read through another.
#[derive(Clone)]
pub struct AccountStore {
    store: Store,
    account_id: String,
}

impl AccountStore {
    pub fn collection<T>(&self, name: &str) -> Result<Collection<T>, StoreError> {
        self.store.collection(
            &self.account_id,
            format!("account/{}/{name}", self.account_id),
        )
    }

    /// Stores a file as an age stream to this account (atomically, durably).
    pub fn put_file(&self, name: &str, content: &[u8]) -> Result<(), StoreError> {
        let key = self.store.keys.get_or_create(&self.account_id)?;
        let dir = self.store.files_dir(&self.account_id);
        let path = dir.join(file_name(name));
        let io = |source| StoreError::File {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let tmp = path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        key.encrypt_stream(content, &mut file).map_err(io)?;
        file.flush().map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    pub fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut reader) = self.open_file(name)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut out).map_err(|source| StoreError::File {
            path: self.store.files_dir(&self.account_id).join(file_name(name)),
            source,
        })?;
        Ok(Some(out))
    }

    /// Starts writing a file as an encrypted stream, for content too large to hold in
    /// memory; it appears under its name only once [`FileWriter::finish`] succeeds.
    pub fn create_file(&self, name: &str) -> Result<FileWriter, StoreError> {
        let key = self.store.keys.get_or_create(&self.account_id)?;
        let dir = self.store.files_dir(&self.account_id);
        let path = dir.join(file_name(name));
        let tmp = path.with_extension("tmp");
        let io = |source| StoreError::File {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let file = fs::File::create(&tmp).map_err(io)?;
        let writer = key
            .encrypting_writer(std::io::BufWriter::new(file))
            .map_err(io)?;
        Ok(FileWriter { writer, tmp, path })
    }

    /// Opens a file for reading its plaintext, seekably (e.g. to answer range requests).
    pub fn open_file(
        &self,
        name: &str,
    ) -> Result<Option<impl std::io::Read + std::io::Seek + use<>>, StoreError> {
        let key = self.store.keys.get_or_create(&self.account_id)?;
        let path = self.store.files_dir(&self.account_id).join(file_name(name));
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::File { path, source }),
        };
        key.decrypting_reader(std::io::BufReader::new(file))
            .map(Some)
            .map_err(|source| StoreError::File { path, source })
    }

    /// Names of the account's files (as given to [`Self::put_file`], sanitised).
    pub fn file_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.store.files_dir(&self.account_id);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::File { path: dir, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::File {
                path: dir.clone(),
                source,
            })?;
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".age"))
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn remove_file(&self, name: &str) -> Result<(), StoreError> {
        let path = self.store.files_dir(&self.account_id).join(file_name(name));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::File { path, source }),
        }
    }
}

/// An encrypted file being written; see [`AccountStore::create_file`].
pub struct FileWriter {
    writer: age::stream::StreamWriter<std::io::BufWriter<fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

impl FileWriter {
    /// Seals the stream, makes it durable and gives it its name.
    pub fn finish(self) -> Result<(), StoreError> {
        let io = |source| StoreError::File {
            path: self.path.clone(),
            source,
        };
        let file = self
            .writer
            .finish()
            .map_err(io)?
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        fs::rename(&self.tmp, &self.path).map_err(io)
    }
}

/// File names are derived from caller names without letting them escape the directory.
fn file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.age")
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    k: &'a str,
    v: &'a T,
}

#[derive(Deserialize)]
struct Envelope<T> {
    k: String,
    v: T,
}

pub struct Collection<T> {
    tree: sled::Tree,
    name: String,
    key: Arc<AccountKey>,
    _record: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree.get(self.physical(key))? {
            Some(bytes) => self
                .decode(&self.physical(key), &bytes)
                .map(|(_, v)| Some(v)),
            None => Ok(None),
        }
    }

    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let pk = self.physical(key);
        let sealed = self.encode(&pk, key, value)?;
        self.tree.insert(pk, sealed)?;
        Ok(())
    }

    /// Inserts only if the key is free; returns whether it was inserted.
    pub fn insert_new(&self, key: &str, value: &T) -> Result<bool, StoreError> {
        let pk = self.physical(key);
        let sealed = self.encode(&pk, key, value)?;
        let swapped = self
            .tree
            .compare_and_swap(&pk, None::<&[u8]>, Some(sealed))?;
        Ok(swapped.is_ok())
    }

    /// Inserts `value` under a free `key` and, in the same transaction, `other_value`
    /// into another collection: both or neither (e.g. an email claim and its user).
    /// Returns false, writing nothing, when `key` is taken.
    pub fn insert_new_with<U: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        value: &T,
        other: &Collection<U>,
        other_key: &str,
        other_value: &U,
    ) -> Result<bool, StoreError> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let pk = self.physical(key);
        let sealed = self.encode(&pk, key, value)?;
        let other_pk = other.physical(other_key);
        let other_sealed = other.encode(&other_pk, other_key, other_value)?;
        let result = (&self.tree, &other.tree).transaction(|(mine, theirs)| {
            if mine.get(&pk)?.is_some() {
                return Ok(false);
            }
            mine.insert(pk.as_slice(), sealed.as_slice())?;
            theirs.insert(other_pk.as_slice(), other_sealed.as_slice())?;
            Ok::<_, ConflictableTransactionError<()>>(true)
        });
        match result {
            Ok(inserted) => Ok(inserted),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => Ok(false),
        }
    }

    pub fn remove(&self, key: &str) -> Result<Option<T>, StoreError> {
        let pk = self.physical(key);
        match self.tree.remove(&pk)? {
            Some(bytes) => self.decode(&pk, &bytes).map(|(_, v)| Some(v)),
            None => Ok(None),
        }
    }

    /// Atomically replaces the record with what `change` returns from the current one
    /// (`None` removes it). `change` may run more than once under contention, so it must
    /// not have side effects. Returns the new record.
    pub fn update(
        &self,
        key: &str,
        mut change: impl FnMut(Option<T>) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let pk = self.physical(key);
        loop {
            let old_bytes = self.tree.get(&pk)?;
            let old = match &old_bytes {
                Some(bytes) => Some(self.decode(&pk, bytes)?.1),
                None => None,
            };
            let new = change(old);
            let new_bytes = match &new {
                Some(value) => Some(self.encode(&pk, key, value)?),
                None => None,
            };
            if self
                .tree
                .compare_and_swap(&pk, old_bytes, new_bytes)?
                .is_ok()
            {
                return Ok(new);
            }
        }
    }

    /// Every record (in no particular order: keys are stored as HMACs).
    pub fn values(&self) -> Result<Vec<T>, StoreError> {
        Ok(self.entries()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every record with its key.
    pub fn entries(&self) -> Result<Vec<(String, T)>, StoreError> {
        self.tree
            .iter()
            .map(|entry| {
                let (pk, bytes) = entry?;
                self.decode(&pk, &bytes)
            })
            .collect()
    }

    /// Removes every record for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&T) -> bool) -> Result<(), StoreError> {
        for entry in self.tree.iter() {
            let (pk, bytes) = entry?;
            let (_, value) = self.decode(&pk, &bytes)?;
            if !keep(&value) {
                self.tree.remove(&pk)?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn physical(&self, key: &str) -> Vec<u8> {
        self.key.physical_key(&self.name, key)
    }

    fn encode(&self, pk: &[u8], key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        let plain =
            serde_json::to_vec(&EnvelopeRef { k: key, v: value }).map_err(StoreError::Encode)?;
        Ok(self.key.seal(&self.name, pk, &plain)?)
    }

    fn decode(&self, pk: &[u8], bytes: &[u8]) -> Result<(String, T), StoreError> {
        let corrupt = || StoreError::Corrupt {
            collection: self.name.clone(),
        };
        let plain = self.key.open(&self.name, pk, bytes).ok_or_else(corrupt)?;
        let envelope: Envelope<T> = serde_json::from_slice(&plain).map_err(|_| corrupt())?;
        Ok((envelope.k, envelope.v))
    }
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
        let raw_one = a.tree.get(a.physical("one")).expect("get").expect("raw");
        // Copy the sealed bytes of "one" over "two" in the same collection…
        a.tree
            .insert(a.physical("two"), raw_one.clone())
            .expect("insert");
        assert!(matches!(a.get("two"), Err(StoreError::Corrupt { .. })));
        // …and into another account's collection under the same name.
        b.tree.insert(b.physical("one"), raw_one).expect("insert");
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
