//! The embedded engine: one redb file holding every tree of sealed records.
//!
//! Contract: a write is visible to every later read at once and becomes durable at the
//! next [`Engine::sync`], which returns only after an fsync'd commit that includes every
//! write finished before it was called. Writes commit without fsync (redb's
//! `Durability::None`) and a sync is one empty durable commit, so the requests waiting
//! for durability at the same moment share one fsync (group commit). After a crash the
//! file opens at the last durable commit: all the writes before it, none after it.
//!
//! Layout: one table whose keys are `tree name, 0x00, stored key`, so a tree is a key
//! range, an account's trees are dropped with one range and a backup reads every tree in
//! one read transaction (a point-in-time copy). Tree names never contain 0x00.

use std::fs;
use std::ops::Bound;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// The engine's file inside the data directory.
pub const STORE_FILE: &str = "store.redb";

pub struct Engine {
    /// `None` once closed: the file (and its lock) is released at once, whoever still
    /// holds the engine, so a restart never waits for a straggling task.
    db: std::sync::RwLock<Option<Database>>,
    path: PathBuf,
    /// Write commits finished so far, and how many of them a durable commit covers.
    written: AtomicU64,
    durable: AtomicU64,
    /// One durable commit at a time; those who wait behind it usually find their writes
    /// already covered when they get it.
    syncing: Mutex<()>,
}

/// A stored record as the engine holds it: the stored (HMAC'd) key and the sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A record of some tree, as a snapshot lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRecord {
    pub tree: String,
    pub record: RawRecord,
}

/// One write transaction's view of the records; see [`Engine::write`].
pub struct Writes<'t> {
    table: redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl Engine {
    /// Opens (or creates) the store file. A damaged file is refused with a message that
    /// names it and is never written over.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::File {
                path: path.to_owned(),
                source,
            })?;
        // A file from an earlier release may have been created with looser bits.
        let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
        let backend = redb::backends::FileBackend::new(file).map_err(|e| open_error(path, e))?;
        Self::open_backend(backend, path, cache_bytes)
    }

    /// Opens the store on any storage (the power-loss test supplies its own); `path`
    /// names it in messages.
    pub fn open_backend(
        backend: impl redb::StorageBackend,
        path: &Path,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        // redb may panic on a file it cannot make sense of rather than return an error:
        // that must become the same clear refusal, not a crash loop.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(backend)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_error(path, e)),
            Err(_) => {
                return Err(StoreError::Damaged {
                    path: path.to_owned(),
                    reason: "the engine could not read its structure".into(),
                });
            }
        };
        let engine = Self {
            db: std::sync::RwLock::new(Some(db)),
            path: path.to_owned(),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncing: Mutex::new(()),
        };
        // The table exists from the first start, so reads never see "no such table".
        engine.write(|_| Ok(()))?;
        engine.sync()?;
        Ok(engine)
    }

    /// Makes everything durable and releases the file; every later use is refused.
    pub fn close(&self) -> Result<(), StoreError> {
        self.sync()?;
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }

    /// Runs `use_db` on the open database; [`Self::close`] waits for it.
    fn with_db<R>(
        &self,
        use_db: impl FnOnce(&Database) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        use_db(guard.as_ref().ok_or(StoreError::Closed)?)
    }

    /// The records table as of now (a read transaction's snapshot, which keeps itself
    /// alive as long as the table is used).
    fn records(&self) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(engine)?;
            txn.open_table(RECORDS).map_err(engine)
        })
    }

    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.records()?;
        let value = table.get(physical(tree, key).as_slice()).map_err(engine)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Every (stored key, value) of one tree, in key order.
    pub fn scan(&self, tree: &str) -> Result<Vec<RawRecord>, StoreError> {
        let table = self.records()?;
        let (lower, upper) = tree_bounds(tree);
        let mut out = Vec::new();
        for entry in table
            .range::<&[u8]>(lower.as_slice()..upper.as_slice())
            .map_err(engine)?
        {
            let (k, v) = entry.map_err(engine)?;
            out.push(RawRecord {
                key: k.value()[lower.len()..].to_vec(),
                value: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    pub fn tree_is_empty(&self, tree: &str) -> Result<bool, StoreError> {
        let table = self.records()?;
        let (lower, upper) = tree_bounds(tree);
        let mut range = table
            .range::<&[u8]>(lower.as_slice()..upper.as_slice())
            .map_err(engine)?;
        Ok(range.next().is_none())
    }

    /// Runs `change` in one write transaction: all of its writes or, if it fails, none.
    /// The commit is not yet durable; see [`Self::sync`].
    pub fn write<R>(
        &self,
        change: impl FnOnce(&mut Writes<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.with_db(|db| {
            let mut txn = match db.try_begin_write() {
                Ok(txn) => txn,
                // Another write, or a durable commit's fsync, holds the writer. Waiting for it
                // must not stall a runtime thread that other requests need: with eight writers
                // on two runtime workers, 636-640 acknowledged writes/s blocking in place,
                // 679-728 handing the wait off (write_latency, three and four runs).
                Err(redb::TransactionError::WouldBlock) => {
                    wait_blocking(|| db.begin_write()).map_err(engine)?
                }
                Err(e) => return Err(engine(e)),
            };
            txn.set_durability(Durability::None).map_err(engine)?;
            let result = {
                let table = txn.open_table(RECORDS).map_err(engine)?;
                let mut writes = Writes { table };
                change(&mut writes)
            };
            match result {
                Ok(value) => {
                    txn.commit().map_err(engine)?;
                    self.written.fetch_add(1, Ordering::SeqCst);
                    Ok(value)
                }
                Err(e) => {
                    txn.abort().map_err(engine)?;
                    Err(e)
                }
            }
        })
    }

    /// Returns once every write finished before the call is durable (fsync'd).
    pub fn sync(&self) -> Result<(), StoreError> {
        let target = self.written.load(Ordering::SeqCst);
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let _turn = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let covered = self.with_db(|db| {
            let mut txn = db.begin_write().map_err(engine)?;
            // Holding the writer, no write is between its commit and its count: this many
            // writes are exactly the ones the durable commit below covers.
            let covered = self.written.load(Ordering::SeqCst);
            txn.set_durability(Durability::Immediate).map_err(engine)?;
            // The allocator state is saved with the commit, so the open after a crash
            // does not walk the whole file to rebuild it (an appliance restart stays quick).
            txn.set_quick_repair(true);
            txn.commit().map_err(engine)?;
            Ok(covered)
        })?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// Whether every write so far is durable.
    pub fn is_synced(&self) -> bool {
        self.durable.load(Ordering::SeqCst) >= self.written.load(Ordering::SeqCst)
    }

    /// (writes committed so far, how many of them are durable): a write made before
    /// reading the first number is durable once the second reaches it.
    pub fn marks(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::SeqCst),
            self.durable.load(Ordering::SeqCst),
        )
    }

    /// Removes every tree whose name starts with `prefix`, in one transaction.
    pub fn drop_trees(&self, prefix: &str) -> Result<(), StoreError> {
        self.write(|w| {
            let lower = prefix.as_bytes().to_vec();
            let upper = prefix_end(prefix.as_bytes());
            let upper_bound = match &upper {
                Some(u) => Bound::Excluded(u.as_slice()),
                None => Bound::Unbounded,
            };
            w.table
                .retain_in::<&[u8], _>((Bound::Included(lower.as_slice()), upper_bound), |_, _| {
                    false
                })
                .map_err(engine)
        })
    }

    /// Every record of every tree, read in one transaction: (tree, stored key, value).
    pub fn snapshot(&self) -> Result<Vec<TreeRecord>, StoreError> {
        let table = self.records()?;
        let mut out = Vec::new();
        for entry in table.range::<&[u8]>(..).map_err(engine)? {
            let (k, v) = entry.map_err(engine)?;
            let k = k.value();
            let Some(split) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            out.push(TreeRecord {
                tree: String::from_utf8_lossy(&k[..split]).into_owned(),
                record: RawRecord {
                    key: k[split + 1..].to_vec(),
                    value: v.value().to_vec(),
                },
            });
        }
        Ok(out)
    }

    pub fn size_on_disk(&self) -> u64 {
        fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

impl Writes<'_> {
    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .table
            .get(physical(tree, key).as_slice())
            .map_err(engine)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn insert(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.table
            .insert(physical(tree, key).as_slice(), value)
            .map_err(engine)?;
        Ok(())
    }

    /// Removes a record; returns its value if there was one.
    pub fn remove(&mut self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self
            .table
            .remove(physical(tree, key).as_slice())
            .map_err(engine)?;
        Ok(old.map(|v| v.value().to_vec()))
    }

    /// Removes the records of `tree` for which `keep(stored key, value)` is false.
    pub fn retain(
        &mut self,
        tree: &str,
        mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let (lower, upper) = tree_bounds(tree);
        let skip = lower.len();
        self.table
            .retain_in::<&[u8], _>(lower.as_slice()..upper.as_slice(), |k, v| {
                keep(&k[skip..], v)
            })
            .map_err(engine)
    }
}

/// Runs a call that may block for a while: on a multi-threaded tokio runtime, through
/// `block_in_place`, so that the runtime moves its other tasks to another thread.
fn wait_blocking<R>(call: impl FnOnce() -> R) -> R {
    let in_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if in_runtime {
        tokio::task::block_in_place(call)
    } else {
        call()
    }
}

fn physical(tree: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tree.len() + 1 + key.len());
    out.extend_from_slice(tree.as_bytes());
    out.push(0);
    out.extend_from_slice(key);
    out
}

/// `[tree 0x00, tree 0x01)`: exactly the keys of one tree.
fn tree_bounds(tree: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lower = tree.as_bytes().to_vec();
    lower.push(0);
    let mut upper = tree.as_bytes().to_vec();
    upper.push(1);
    (lower, upper)
}

/// The first key after every key that starts with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn engine(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Engine(e.into())
}

fn open_error(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.display().to_string(),
        },
        redb::Error::Corrupted(reason) => StoreError::Damaged {
            path: path.to_owned(),
            reason,
        },
        redb::Error::UpgradeRequired(version) => StoreError::Damaged {
            path: path.to_owned(),
            reason: format!(
                "written in engine file format {version}, which this release cannot read"
            ),
        },
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            StoreError::Damaged {
                path: path.to_owned(),
                reason: "the file is truncated".into(),
            }
        }
        other => StoreError::Damaged {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
#[path = "power_loss_tests.rs"]
mod power_loss_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Engine {
        Engine::open(&dir.join(STORE_FILE), 4 << 20).expect("open")
    }

    #[test]
    fn trees_are_separate_key_ranges_even_when_one_name_prefixes_another() {
        let dir = tempfile::tempdir().expect("dir");
        let e = open(dir.path());
        e.write(|w| {
            w.insert("a", b"k", b"1")?;
            w.insert("ab", b"k", b"2")?;
            w.insert("a/b", b"k", b"3")
        })
        .expect("write");
        assert_eq!(
            e.scan("a").expect("scan"),
            vec![RawRecord {
                key: b"k".to_vec(),
                value: b"1".to_vec()
            }]
        );
        assert_eq!(e.get("ab", b"k").expect("get").as_deref(), Some(&b"2"[..]));
        e.drop_trees("a/").expect("drop");
        assert!(e.tree_is_empty("a/b").expect("empty"));
        assert!(!e.tree_is_empty("a").expect("kept"));
        assert!(!e.tree_is_empty("ab").expect("kept"));
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let e = open(dir.path());
        let result: Result<(), StoreError> = e.write(|w| {
            w.insert("t", b"k", b"v")?;
            Err(StoreError::Corrupt {
                collection: "t".into(),
            })
        });
        assert!(result.is_err());
        assert_eq!(e.get("t", b"k").expect("get"), None);
    }

    #[test]
    fn sync_makes_writes_durable_and_is_free_when_nothing_is_pending() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let e = open(dir.path());
            e.write(|w| w.insert("t", b"k", b"v")).expect("write");
            assert!(!e.is_synced());
            e.sync().expect("sync");
            assert!(e.is_synced());
        }
        let e = open(dir.path());
        assert_eq!(e.get("t", b"k").expect("get").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn the_store_file_is_private() {
        let dir = tempfile::tempdir().expect("dir");
        let _e = open(dir.path());
        let mode = fs::metadata(dir.path().join(STORE_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_or_truncated_file_is_refused_by_name_and_left_as_it_is() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(STORE_FILE);
        {
            let e = open(dir.path());
            e.write(|w| w.insert("t", b"k", &[7u8; 10_000]))
                .expect("write");
            e.sync().expect("sync");
        }
        let whole = fs::read(&path).expect("read");
        for (what, damaged) in [
            ("truncated", whole[..whole.len() / 3].to_vec()),
            ("garbage header", {
                let mut d = whole.clone();
                d[..512].fill(0xA5);
                d
            }),
        ] {
            fs::write(&path, &damaged).expect("damage");
            let err = Engine::open(&path, 4 << 20).err().expect(what);
            let text = err.to_string();
            assert!(
                matches!(err, StoreError::Damaged { .. }) && text.contains(STORE_FILE),
                "{what}: {text}"
            );
            assert!(text.contains("restore"), "{what}: {text}");
            assert_eq!(
                fs::read(&path).expect("read"),
                damaged,
                "{what}: left as it was"
            );
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
