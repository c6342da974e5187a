//! Typed collections over the engine: each record sealed with its owner's key, bound to
//! its tree and key, under an HMAC'd stored key; and batches over several collections.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::engine::{Engine, Writes};
use super::keys::AccountKey;

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

/// Writes to several collections in one transaction; see [`Store::batch`].
pub struct Batch<'b, 't> {
    pub(super) writes: &'b mut Writes<'t>,
}

impl Batch<'_, '_> {
    pub fn put<T: Serialize + DeserializeOwned>(
        &mut self,
        collection: &Collection<T>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let pk = collection.physical(key);
        let sealed = collection.encode(&pk, key, value)?;
        self.writes.insert(&collection.name, &pk, &sealed)
    }

    pub fn remove<T: Serialize + DeserializeOwned>(
        &mut self,
        collection: &Collection<T>,
        key: &str,
    ) -> Result<(), StoreError> {
        self.writes
            .remove(&collection.name, &collection.physical(key))
            .map(|_| ())
    }
}

pub struct Collection<T> {
    pub(super) engine: Arc<Engine>,
    pub(super) name: String,
    pub(super) key: Arc<AccountKey>,
    pub(super) _record: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        let pk = self.physical(key);
        match self.engine.get(&self.name, &pk)? {
            Some(bytes) => self.decode(&pk, &bytes).map(|(_, v)| Some(v)),
            None => Ok(None),
        }
    }

    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let pk = self.physical(key);
        let sealed = self.encode(&pk, key, value)?;
        self.engine.write(|w| w.insert(&self.name, &pk, &sealed))
    }

    /// Inserts only if the key is free; returns whether it was inserted.
    pub fn insert_new(&self, key: &str, value: &T) -> Result<bool, StoreError> {
        let pk = self.physical(key);
        let sealed = self.encode(&pk, key, value)?;
        self.engine.write(|w| {
            if w.get(&self.name, &pk)?.is_some() {
                return Ok(false);
            }
            w.insert(&self.name, &pk, &sealed)?;
            Ok(true)
        })
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
        let pk = self.physical(key);
        let sealed = self.encode(&pk, key, value)?;
        let other_pk = other.physical(other_key);
        let other_sealed = other.encode(&other_pk, other_key, other_value)?;
        self.engine.write(|w| {
            if w.get(&self.name, &pk)?.is_some() {
                return Ok(false);
            }
            w.insert(&self.name, &pk, &sealed)?;
            w.insert(&other.name, &other_pk, &other_sealed)?;
            Ok(true)
        })
    }

    pub fn remove(&self, key: &str) -> Result<Option<T>, StoreError> {
        let pk = self.physical(key);
        match self.engine.write(|w| w.remove(&self.name, &pk))? {
            Some(bytes) => self.decode(&pk, &bytes).map(|(_, v)| Some(v)),
            None => Ok(None),
        }
    }

    /// Atomically replaces the record with what `change` returns from the current one
    /// (`None` removes it), in one write transaction. Returns the new record.
    pub fn update(
        &self,
        key: &str,
        change: impl FnOnce(Option<T>) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let pk = self.physical(key);
        self.engine.write(|w| {
            let old = match w.get(&self.name, &pk)? {
                Some(bytes) => Some(self.decode(&pk, &bytes)?.1),
                None => None,
            };
            let new = change(old);
            match &new {
                Some(value) => w.insert(&self.name, &pk, &self.encode(&pk, key, value)?)?,
                None => {
                    w.remove(&self.name, &pk)?;
                }
            }
            Ok(new)
        })
    }

    /// Every record (in no particular order: keys are stored as HMACs).
    pub fn values(&self) -> Result<Vec<T>, StoreError> {
        Ok(self.entries()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every record with its key.
    pub fn entries(&self) -> Result<Vec<(String, T)>, StoreError> {
        self.engine
            .scan(&self.name)?
            .into_iter()
            .map(|r| self.decode(&r.key, &r.value))
            .collect()
    }

    /// Removes every record for which `keep` is false, in one transaction; a record that
    /// cannot be read stops it with nothing removed.
    pub fn retain(&self, mut keep: impl FnMut(&T) -> bool) -> Result<(), StoreError> {
        let mut failure = None;
        self.engine.write(|w| {
            w.retain(&self.name, |pk, bytes| match self.decode(pk, bytes) {
                Ok((_, value)) => keep(&value),
                Err(e) => {
                    failure.get_or_insert(e);
                    true
                }
            })?;
            match failure.take() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    /// Whether the collection holds no record. A store that cannot be read counts as not
    /// empty: "no accounts yet" would offer first-run setup to whoever asks.
    pub fn is_empty(&self) -> bool {
        self.engine.tree_is_empty(&self.name).unwrap_or(false)
    }

    pub(super) fn physical(&self, key: &str) -> Vec<u8> {
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
