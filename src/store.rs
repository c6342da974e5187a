//! The appliance's persistent state, behind a narrow interface so that the engine (sled
//! today) could be replaced without touching callers.
//!
//! Records are typed: a [`Collection`] stores one serde type under string keys. Global
//! collections hold what must be found before an account is known (users by email,
//! invitation capabilities); everything else lives in per-account collections obtained
//! through [`Store::account`], so a lookup can never reach another account's records.

use std::marker::PhantomData;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("the store in {path} is in use by a running appliance; stop it first")]
    InUse { path: String },
    #[error("store I/O failed: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored record {key:?} in {collection} is unreadable: {source}")]
    Corrupt {
        collection: String,
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode record: {0}")]
    Encode(serde_json::Error),
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(|source| {
            let path = dir.display().to_string();
            // sled holds an exclusive file lock while a process has the store open.
            match &source {
                sled::Error::Io(e) if e.to_string().contains("lock") => StoreError::InUse { path },
                _ => StoreError::Open { path, source },
            }
        })?;
        Ok(Self { db })
    }

    /// A collection shared by the whole appliance.
    pub fn global<T>(&self, name: &str) -> Result<Collection<T>, StoreError> {
        self.collection(format!("global/{name}"))
    }

    /// The collections of one account.
    pub fn account(&self, account_id: &str) -> AccountStore {
        AccountStore {
            store: self.clone(),
            account_id: account_id.to_owned(),
        }
    }

    fn collection<T>(&self, tree_name: String) -> Result<Collection<T>, StoreError> {
        Ok(Collection {
            tree: self.db.open_tree(tree_name.as_bytes())?,
            name: tree_name,
            _record: PhantomData,
        })
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
}

/// The collections of one account; names are scoped so that no key of one account can be
/// read through another.
#[derive(Clone)]
pub struct AccountStore {
    store: Store,
    account_id: String,
}

impl AccountStore {
    pub fn collection<T>(&self, name: &str) -> Result<Collection<T>, StoreError> {
        self.store
            .collection(format!("account/{}/{name}", self.account_id))
    }
}

pub struct Collection<T> {
    tree: sled::Tree,
    name: String,
    _record: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree.get(key.as_bytes())? {
            Some(bytes) => self.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(StoreError::Encode)?;
        self.tree.insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    /// Inserts only if the key is free; returns whether it was inserted.
    pub fn insert_new(&self, key: &str, value: &T) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(StoreError::Encode)?;
        let swapped = self
            .tree
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(bytes))?;
        Ok(swapped.is_ok())
    }

    pub fn remove(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree.remove(key.as_bytes())? {
            Some(bytes) => self.decode(key, &bytes).map(Some),
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
        loop {
            let old_bytes = self.tree.get(key.as_bytes())?;
            let old = match &old_bytes {
                Some(bytes) => Some(self.decode(key, bytes)?),
                None => None,
            };
            let new = change(old);
            let new_bytes = match &new {
                Some(value) => Some(serde_json::to_vec(value).map_err(StoreError::Encode)?),
                None => None,
            };
            if self
                .tree
                .compare_and_swap(key.as_bytes(), old_bytes, new_bytes)?
                .is_ok()
            {
                return Ok(new);
            }
        }
    }

    /// Every record, in key order.
    pub fn values(&self) -> Result<Vec<T>, StoreError> {
        self.tree
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                self.decode(&String::from_utf8_lossy(&key), &bytes)
            })
            .collect()
    }

    /// Every record with its key, in key order.
    pub fn entries(&self) -> Result<Vec<(String, T)>, StoreError> {
        self.tree
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                let key = String::from_utf8_lossy(&key).into_owned();
                let value = self.decode(&key, &bytes)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Removes every record for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&T) -> bool) -> Result<(), StoreError> {
        for (key, value) in self.entries()? {
            if !keep(&value) {
                self.tree.remove(key.as_bytes())?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
            collection: self.name.clone(),
            key: key.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_collections_do_not_see_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
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
        let store = Store::open(dir.path()).expect("open");
        let c = store.global::<u32>("c").expect("c");
        assert!(c.insert_new("k", &1).expect("first"));
        assert!(!c.insert_new("k", &2).expect("second"));
        assert_eq!(c.get("k").expect("get"), Some(1));
    }

    #[test]
    fn update_applies_change_atomically_and_can_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let c = store.global::<u32>("c").expect("c");
        c.put("k", &1).expect("put");
        let new = c.update("k", |v| v.map(|n| n + 1)).expect("update");
        assert_eq!(new, Some(2));
        c.update("k", |_| None).expect("remove");
        assert_eq!(c.get("k").expect("get"), None);
    }
}
