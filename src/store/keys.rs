//! Envelope encryption: the master age identity, one data key per account (wrapped by
//! the master), and sealing of every stored value with AES-256-GCM bound to its tree and
//! key.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use age::secrecy::ExposeSecret;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::KEYS_TREE;
use super::engine::RawRecord;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the master key {path} can be read by group or others (mode {mode:o}); \
         run `chmod 600 {path}` (Sightline refuses to start with an exposed key)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("cannot read or write the master key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the master key {path} is not an age identity")]
    Malformed { path: PathBuf },
    #[error(
        "an account key cannot be unwrapped with this master key (wrong or rotated master key?)"
    )]
    Unwrap,
    #[error("encryption failed: {0}")]
    Encrypt(String),
}

/// The name of the systemd credential (`LoadCredential=`) that may carry the master key.
pub const CREDENTIAL_NAME: &str = "sightline-master-key";
pub const MASTER_KEY_FILE: &str = "master.key";

/// The master age identity: wraps the account keys and nothing else.
pub struct MasterKey {
    identity: age::x25519::Identity,
}

impl MasterKey {
    /// The master key from a systemd credential, or `<data_dir>/master.key` (created on
    /// first start with mode 0600; refused if group or others can read it).
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = Path::new(&dir).join(CREDENTIAL_NAME);
            if path.exists() {
                return Self::read(&path);
            }
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        if path.exists() {
            Self::read(&path)
        } else {
            let key = Self {
                identity: age::x25519::Identity::generate(),
            };
            key.write(&path)?;
            Ok(key)
        }
    }

    pub fn generate() -> Self {
        Self {
            identity: age::x25519::Identity::generate(),
        }
    }

    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let identity = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| KeyError::Malformed {
                path: path.to_owned(),
            })?;
        Ok(Self { identity })
    }

    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let text = format!(
            "# Sightline master key: wraps every account's data key. Keep it secret.\n# public key: {}\n{}\n",
            self.identity.to_public(),
            self.identity.to_string().expose_secret()
        );
        write_private(path, text.as_bytes()).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
    }

    fn wrap(&self, secret: &[u8]) -> Result<Vec<u8>, KeyError> {
        age::encrypt(&self.identity.to_public(), secret)
            .map_err(|e| KeyError::Encrypt(e.to_string()))
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, KeyError> {
        age::decrypt(&self.identity, wrapped).map_err(|_| KeyError::Unwrap)
    }
}

pub use crate::files::write_private;

#[derive(Serialize, Deserialize)]
struct KeyMaterial {
    /// AES-256-GCM key for values and HMAC key derivation, base64.
    data_key: String,
    /// age identity for this account's files.
    file_identity: String,
}

/// One account's keys: values are sealed with its data key, record keys are replaced by
/// an HMAC under it, files are encrypted to its age identity.
pub struct AccountKey {
    cipher: Aes256Gcm,
    mac_key: [u8; 32],
    file_identity: age::x25519::Identity,
    material: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;
const SEALED_VERSION: u8 = 1;

impl AccountKey {
    fn generate() -> Self {
        let mut data_key = [0u8; 32];
        OsRng.fill_bytes(&mut data_key);
        let identity = age::x25519::Identity::generate();
        let material = serde_json::to_vec(&KeyMaterial {
            data_key: base64::engine::general_purpose::STANDARD.encode(data_key),
            file_identity: identity.to_string().expose_secret().to_owned(),
        })
        .unwrap_or_default();
        Self::from_material(&material).unwrap_or_else(|_| unreachable_key())
    }

    pub fn from_material(material: &[u8]) -> Result<Self, KeyError> {
        let parsed: KeyMaterial = serde_json::from_slice(material).map_err(|_| KeyError::Unwrap)?;
        let data_key = base64::engine::general_purpose::STANDARD
            .decode(parsed.data_key)
            .map_err(|_| KeyError::Unwrap)?;
        let cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|_| KeyError::Unwrap)?;
        // A separate key for record-key HMACs, derived so the data key is never reused.
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&data_key).map_err(|_| KeyError::Unwrap)?;
        mac.update(b"sightline record keys v1");
        let mac_key: [u8; 32] = mac.finalize().into_bytes().into();
        let file_identity = parsed.file_identity.parse().map_err(|_| KeyError::Unwrap)?;
        Ok(Self {
            cipher,
            mac_key,
            file_identity,
            material: material.to_vec(),
        })
    }

    pub fn material(&self) -> &[u8] {
        &self.material
    }

    /// The stored form of a record key: its HMAC, so keys (emails, PINs) never reach disk.
    pub fn physical_key(&self, tree: &str, key: &str) -> Vec<u8> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| unreachable_mac());
        mac.update(tree.as_bytes());
        mac.update(&[0]);
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// AES-256-GCM with a random nonce; the tree and the stored key are associated data,
    /// so a value copied to another key or tree does not open.
    pub fn seal(
        &self,
        tree: &str,
        physical_key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(tree, physical_key);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Encrypt("AES-GCM".into()))?;
        let mut out = Vec::with_capacity(1 + 12 + ciphertext.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    pub fn open(&self, tree: &str, physical_key: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 13 || sealed[0] != SEALED_VERSION {
            return None;
        }
        let aad = associated_data(tree, physical_key);
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed[1..13]),
                Payload {
                    msg: &sealed[13..],
                    aad: &aad,
                },
            )
            .ok()
    }

    /// The public half of this account's file identity: whoever holds it can encrypt a
    /// file only this key opens (the certificate import does, without opening the store).
    pub fn file_recipient(&self) -> String {
        self.file_identity.to_public().to_string()
    }

    /// Encrypts a file's content as an age stream to this account.
    pub fn encrypt_stream(&self, mut input: impl Read, output: impl Write) -> std::io::Result<()> {
        let mut writer = self.encrypting_writer(output)?;
        std::io::copy(&mut input, &mut writer)?;
        writer.finish()?;
        Ok(())
    }

    /// A writer that encrypts what is written to it; `finish` writes the last chunk.
    pub fn encrypting_writer<W: Write>(
        &self,
        output: W,
    ) -> std::io::Result<age::stream::StreamWriter<W>> {
        let recipient = self.file_identity.to_public();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(std::io::Error::other)?;
        encryptor.wrap_output(output)
    }

    pub fn decrypt_stream(&self, input: impl Read, mut output: impl Write) -> std::io::Result<()> {
        let mut reader = self.decrypting_reader(input)?;
        std::io::copy(&mut reader, &mut output)?;
        Ok(())
    }

    /// A reader of an encrypted file's plaintext; seekable when `input` is.
    pub fn decrypting_reader<R: Read>(
        &self,
        input: R,
    ) -> std::io::Result<age::stream::StreamReader<R>> {
        let decryptor = age::Decryptor::new(input).map_err(std::io::Error::other)?;
        decryptor
            .decrypt(std::iter::once(&self.file_identity as &dyn age::Identity))
            .map_err(std::io::Error::other)
    }
}

fn associated_data(tree: &str, physical_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tree.len() + 1 + physical_key.len());
    aad.extend_from_slice(tree.as_bytes());
    aad.push(0);
    aad.extend_from_slice(physical_key);
    aad
}

#[cold]
fn unreachable_key() -> AccountKey {
    // Generated material always parses; this only exists to avoid a panic path.
    AccountKey {
        cipher: Aes256Gcm::new(&[0u8; 32].into()),
        mac_key: [0; 32],
        file_identity: age::x25519::Identity::generate(),
        material: Vec::new(),
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    <HmacSha256 as KeyInit>::new(&[0u8; 64].into())
}

/// The account keys, wrapped by the master key in the store's `keys` tree and cached
/// unwrapped in memory.
pub struct KeyRing {
    master: RwLock<MasterKey>,
    engine: Arc<super::engine::Engine>,
    cache: RwLock<HashMap<String, Arc<AccountKey>>>,
}

impl KeyRing {
    pub fn new(master: MasterKey, engine: Arc<super::engine::Engine>) -> Self {
        Self {
            master: RwLock::new(master),
            engine,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The owner's key, created on first use.
    pub fn get_or_create(&self, owner: &str) -> Result<Arc<AccountKey>, super::StoreError> {
        if let Some(key) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(owner)
        {
            return Ok(key.clone());
        }
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        let key = match self.engine.get(KEYS_TREE, owner.as_bytes())? {
            Some(wrapped) => AccountKey::from_material(&master.unwrap(&wrapped)?)?,
            None => {
                let key = AccountKey::generate();
                let wrapped = master.wrap(key.material())?;
                let existing = self.engine.write(|w| {
                    let existing = w.get(KEYS_TREE, owner.as_bytes())?;
                    if existing.is_none() {
                        w.insert(KEYS_TREE, owner.as_bytes(), &wrapped)?;
                    }
                    Ok(existing)
                })?;
                match existing {
                    // Someone else created it first: use theirs.
                    Some(wrapped) => AccountKey::from_material(&master.unwrap(&wrapped)?)?,
                    None => key,
                }
            }
        };
        let key = Arc::new(key);
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner.to_owned(), key.clone());
        Ok(key)
    }

    /// Destroys the owner's key: everything sealed with it becomes unreadable.
    pub fn destroy(&self, owner: &str) -> Result<(), super::StoreError> {
        self.engine
            .write(|w| w.remove(KEYS_TREE, owner.as_bytes()))?;
        self.engine.sync()?;
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(owner);
        Ok(())
    }

    /// Every owner's key material (for the backup key vault).
    pub fn all(&self) -> Result<Vec<(String, Vec<u8>)>, super::StoreError> {
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        self.unwrap_all(&master, self.engine.scan(KEYS_TREE)?)
    }

    fn unwrap_all(
        &self,
        master: &MasterKey,
        wrapped: Vec<RawRecord>,
    ) -> Result<Vec<(String, Vec<u8>)>, super::StoreError> {
        wrapped
            .into_iter()
            .map(|r| {
                Ok((
                    String::from_utf8_lossy(&r.key).into_owned(),
                    master.unwrap(&r.value)?,
                ))
            })
            .collect()
    }

    /// The key material of (owner, wrapped key) pairs read elsewhere (a backup's snapshot).
    pub fn unwrap_with_master(
        &self,
        wrapped: Vec<RawRecord>,
    ) -> Result<Vec<(String, Vec<u8>)>, super::StoreError> {
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        self.unwrap_all(&master, wrapped)
    }

    /// Installs key material as-is (restore).
    pub fn install(&self, owner: &str, material: &[u8]) -> Result<(), super::StoreError> {
        let master = self.master.read().unwrap_or_else(|p| p.into_inner());
        AccountKey::from_material(material)?;
        let wrapped = master.wrap(material)?;
        self.engine
            .write(|w| w.insert(KEYS_TREE, owner.as_bytes(), &wrapped))
    }

    /// Re-wraps every account key under a new master key.
    pub fn rewrap(&self, new_master: MasterKey) -> Result<(), super::StoreError> {
        let all = self.all()?;
        let mut rewrapped = Vec::new();
        for (owner, material) in &all {
            rewrapped.push((owner, new_master.wrap(material)?));
        }
        self.engine.write(|w| {
            for (owner, wrapped) in &rewrapped {
                w.insert(KEYS_TREE, owner.as_bytes(), wrapped)?;
            }
            Ok(())
        })?;
        self.engine.sync()?;
        *self.master.write().unwrap_or_else(|p| p.into_inner()) = new_master;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_own_tree_and_key() {
        let key = AccountKey::generate();
        let pk = key.physical_key("users", "alice");
        let sealed = key.seal("users", &pk, b"secret").expect("seal");
        assert_eq!(
            key.open("users", &pk, &sealed).as_deref(),
            Some(&b"secret"[..])
        );
        let other_pk = key.physical_key("users", "bob");
        assert_eq!(
            key.open("users", &other_pk, &sealed),
            None,
            "moved to another key"
        );
        assert_eq!(
            key.open("groups", &pk, &sealed),
            None,
            "moved to another tree"
        );
        let other_account = AccountKey::generate();
        assert_eq!(
            other_account.open("users", &pk, &sealed),
            None,
            "another account"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open("users", &pk, &tampered), None);
    }

    #[test]
    fn record_keys_are_hidden_and_differ_between_accounts() {
        let a = AccountKey::generate();
        let b = AccountKey::generate();
        let pk = a.physical_key("users_by_email", "ada@example.com");
        assert!(!String::from_utf8_lossy(&pk).contains("ada"));
        assert_ne!(pk, b.physical_key("users_by_email", "ada@example.com"));
        assert_eq!(pk, a.physical_key("users_by_email", "ada@example.com"));
    }

    #[test]
    fn files_round_trip_as_age_streams() {
        let key = AccountKey::generate();
        let mut encrypted = Vec::new();
        key.encrypt_stream(&b"snapshot bytes"[..], &mut encrypted)
            .expect("encrypt");
        assert!(encrypted.starts_with(b"age-encryption.org/v1"));
        let mut plain = Vec::new();
        key.decrypt_stream(&encrypted[..], &mut plain)
            .expect("decrypt");
        assert_eq!(plain, b"snapshot bytes");
        let mut wrong = Vec::new();
        assert!(
            AccountKey::generate()
                .decrypt_stream(&encrypted[..], &mut wrong)
                .is_err()
        );
    }

    #[test]
    fn an_exposed_master_key_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let key = MasterKey::load_or_create(dir.path()).expect("create");
        let path = dir.path().join(MASTER_KEY_FILE);
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        drop(key);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = MasterKey::load_or_create(dir.path())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
