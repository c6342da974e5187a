//! Rolling encrypted backups: a full backup, then incrementals, each an age file
//! encrypted to the admin's recipient, plus one key vault file that holds the account
//! keys. The vault is rewritten at every backup and whenever an account is deleted, so a
//! deleted account's data in older backups has no key anywhere (crypto-shredding).
//!
//! Restore needs the admin's offline identity, goes into an empty data directory, checks
//! every archive (age authentication, an end marker with a digest, the chain of
//! incrementals) and only then moves the restored directory into place.

mod restore;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::engine::{RawRecord, TreeRecord};
use super::keys::write_private;
use super::{KEYS_TREE, Store, StoreError};

pub use restore::{RestoreReport, restore};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup I/O failed at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backup recipient {0:?} is not an age public key (age1…)")]
    BadRecipient(String),
    #[error("the identity file {0} holds no age identity")]
    BadIdentity(PathBuf),
    #[error("backup {0} cannot be decrypted with this identity, or it is damaged")]
    Undecryptable(PathBuf),
    #[error("backup {0} is damaged or incomplete: {1}")]
    Damaged(PathBuf, String),
    #[error("no complete backup found in {0}")]
    NoBackup(PathBuf),
    #[error("restore target {0} is not empty; restore only into an empty directory")]
    TargetNotEmpty(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Full,
    Incremental,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    seq: u64,
    kind: Kind,
    id: String,
    base: Option<String>,
    created_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Line {
    /// A record: tree name, stored key and sealed value, exactly as on disk.
    Record {
        tree: String,
        k: String,
        v: String,
    },
    /// A record removed since the previous backup.
    Removed {
        tree: String,
        k: String,
    },
    /// A file under the data directory (already encrypted, or the CA certificate).
    File {
        path: String,
        v: String,
    },
    FileRemoved {
        path: String,
    },
    /// Closes the archive; its digest covers every earlier line.
    End {
        sha256: String,
    },
}

/// What the previous backup contained, to compute the next incremental.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Where the vault was last written and to whom, so an account deletion can rewrite
    /// it even when the deleting tool was started without the backup settings.
    #[serde(default)]
    vault: Option<(PathBuf, String)>,
    seq: u64,
    last_id: Option<String>,
    since_full: u32,
    records: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
}

pub struct BackupPolicy<'a> {
    pub directory: &'a Path,
    pub recipient: &'a str,
    pub incrementals_per_full: u32,
    pub keep_full: u32,
}

const STATE_FILE: &str = "backup-state.json";
const VAULT_FILE: &str = "sightline-keys.age";
const FORMAT: &str = "sightline-backup-1";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn recipient(text: &str) -> Result<age::x25519::Recipient, BackupError> {
    text.trim()
        .parse()
        .map_err(|_| BackupError::BadRecipient(text.to_owned()))
}

fn digest_hex(bytes: &[u8]) -> String {
    crate::ids::sha256_hex(bytes)
}

/// Takes a backup now: full when forced, when none exists yet or when enough incrementals
/// followed the last full; otherwise incremental. Returns the archive written.
pub fn run(
    store: &Store,
    data_dir: &Path,
    policy: &BackupPolicy<'_>,
    now_ms: u64,
    force_full: bool,
) -> Result<PathBuf, BackupError> {
    let to = recipient(policy.recipient)?;
    fs::create_dir_all(policy.directory).map_err(io(policy.directory))?;
    let state_path = data_dir.join(STATE_FILE);
    let mut state: State = fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let has_full = list(policy.directory)?.iter().any(|a| a.1 == Kind::Full);
    let kind = if force_full
        || !has_full
        || state.last_id.is_none()
        || state.since_full >= policy.incrementals_per_full
    {
        Kind::Full
    } else {
        Kind::Incremental
    };

    // One read transaction: the records and the keys that open them as of one moment,
    // however busy the appliance is meanwhile.
    let (wrapped_keys, records_now): (Vec<_>, Vec<_>) = store
        .engine()
        .snapshot()?
        .into_iter()
        .partition(|r| r.tree == KEYS_TREE);
    let wrapped_keys = wrapped_keys.into_iter().map(|r| r.record).collect();
    let keys_now = store.keyring().unwrap_with_master(wrapped_keys)?;
    let mut lines = Vec::new();
    let mut records = BTreeMap::new();
    for TreeRecord {
        tree: tree_name,
        record: RawRecord { key: k, value: v },
    } in records_now
    {
        let id = format!("{tree_name}\0{}", B64.encode(&k));
        let hash = digest_hex(&v);
        if kind == Kind::Full || state.records.get(&id) != Some(&hash) {
            lines.push(Line::Record {
                tree: tree_name.clone(),
                k: B64.encode(&k),
                v: B64.encode(&v),
            });
        }
        records.insert(id, hash);
    }
    if kind == Kind::Incremental {
        for id in state.records.keys().filter(|id| !records.contains_key(*id)) {
            if let Some((tree, k)) = id.split_once('\0') {
                lines.push(Line::Removed {
                    tree: tree.to_owned(),
                    k: k.to_owned(),
                });
            }
        }
    }
    let mut files = BTreeMap::new();
    for path in data_files(data_dir)? {
        let full = data_dir.join(&path);
        let bytes = fs::read(&full).map_err(io(&full))?;
        let hash = digest_hex(&bytes);
        if kind == Kind::Full || state.files.get(&path) != Some(&hash) {
            lines.push(Line::File {
                path: path.clone(),
                v: B64.encode(&bytes),
            });
        }
        files.insert(path, hash);
    }
    if kind == Kind::Incremental {
        for path in state.files.keys().filter(|p| !files.contains_key(*p)) {
            lines.push(Line::FileRemoved { path: path.clone() });
        }
    }

    let seq = state.seq + 1;
    // 256 random bits, hashed to the same 64 hex characters archives have always had.
    let id = digest_hex(&rand::random::<[u8; 32]>());
    let manifest = Manifest {
        format: FORMAT.into(),
        seq,
        kind,
        id: id.clone(),
        base: if kind == Kind::Full {
            None
        } else {
            state.last_id.clone()
        },
        created_ms: now_ms,
    };
    let mut plain = Vec::new();
    let mut push = |bytes: Vec<u8>| {
        plain.extend_from_slice(&bytes);
        plain.push(b'\n');
    };
    push(serde_json::to_vec(&manifest).map_err(StoreError::Encode)?);
    for line in &lines {
        push(serde_json::to_vec(line).map_err(StoreError::Encode)?);
    }
    let sha256 = digest_hex(&plain);
    plain
        .extend_from_slice(&serde_json::to_vec(&Line::End { sha256 }).map_err(StoreError::Encode)?);
    plain.push(b'\n');

    let suffix = if kind == Kind::Full { "full" } else { "incr" };
    let archive = policy
        .directory
        .join(format!("sightline-{seq:08}-{suffix}.age"));
    let encrypted = age::encrypt(&to, &plain).map_err(|e| BackupError::Io {
        path: archive.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    write_durably(&archive, &encrypted)?;
    write_vault_of(keys_now, policy.directory, policy.recipient)?;

    state = State {
        vault: Some((policy.directory.to_owned(), policy.recipient.to_owned())),
        seq,
        last_id: Some(id),
        since_full: if kind == Kind::Full {
            0
        } else {
            state.since_full + 1
        },
        records,
        files,
    };
    write_private(
        &state_path,
        &serde_json::to_vec(&state).map_err(StoreError::Encode)?,
    )
    .map_err(io(&state_path))?;
    if kind == Kind::Full {
        prune(policy.directory, policy.keep_full)?;
    }
    Ok(archive)
}

/// Rewrites the key vault from the live keys. Called after every backup and after an
/// account is deleted, so older archives lose the deleted account's key.
pub fn write_vault(
    store: &Store,
    directory: &Path,
    recipient_text: &str,
) -> Result<(), BackupError> {
    write_vault_of(store.keyring().all()?, directory, recipient_text)
}

fn write_vault_of(
    keys: Vec<(String, Vec<u8>)>,
    directory: &Path,
    recipient_text: &str,
) -> Result<(), BackupError> {
    let to = recipient(recipient_text)?;
    let keys: BTreeMap<String, String> = keys
        .into_iter()
        .map(|(owner, material)| (owner, B64.encode(material)))
        .collect();
    let plain = serde_json::to_vec(&keys).map_err(StoreError::Encode)?;
    let path = directory.join(VAULT_FILE);
    let encrypted = age::encrypt(&to, &plain).map_err(|e| BackupError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    write_durably(&path, &encrypted)
}

/// Rewrites the key vault wherever this data directory's backups last wrote it.
pub fn rewrite_known_vault(store: &Store, data_dir: &Path) -> Result<(), BackupError> {
    let state: Option<State> = fs::read(data_dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some((directory, recipient)) = state.and_then(|s| s.vault)
        && directory.exists()
    {
        write_vault(store, &directory, &recipient)?;
    }
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let tmp = path.with_extension("partial");
    let mut file = crate::files::create_private(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Files under the data directory that belong in a backup: account files, the appliance
/// CA and an imported certificate (so a restored appliance serves what browsers trust).
fn data_files(data_dir: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    for fixed in [
        "tls/ca.pem",
        "tls/ca-key.pem",
        "tls/imported.pem",
        "tls/imported-key.age",
    ] {
        if data_dir.join(fixed).exists() {
            out.push(fixed.to_owned());
        }
    }
    let files = data_dir.join("files");
    if files.exists() {
        for account in fs::read_dir(&files).map_err(io(&files))? {
            let account = account.map_err(io(&files))?.path();
            for file in fs::read_dir(&account).map_err(io(&account))? {
                let file = file.map_err(io(&account))?.path();
                if file.extension().is_some_and(|e| e == "age")
                    && let Ok(relative) = file.strip_prefix(data_dir)
                {
                    out.push(relative.to_string_lossy().into_owned());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Archives in a directory as (path, kind, seq), oldest first.
fn list(directory: &Path) -> Result<Vec<(PathBuf, Kind, u64)>, BackupError> {
    let mut out = Vec::new();
    if !directory.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(directory).map_err(io(directory))? {
        let path = entry.map_err(io(directory))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix("sightline-")
            .and_then(|r| r.strip_suffix(".age"))
        else {
            continue;
        };
        let Some((seq, kind)) = rest.split_once('-') else {
            continue;
        };
        let kind = match kind {
            "full" => Kind::Full,
            "incr" => Kind::Incremental,
            _ => continue,
        };
        if let Ok(seq) = seq.parse() {
            out.push((path, kind, seq));
        }
    }
    out.sort_by_key(|a| a.2);
    Ok(out)
}

/// Keeps the newest `keep_full` full backups and the incrementals that follow them.
fn prune(directory: &Path, keep_full: u32) -> Result<(), BackupError> {
    let archives = list(directory)?;
    let fulls: Vec<u64> = archives
        .iter()
        .filter(|a| a.1 == Kind::Full)
        .map(|a| a.2)
        .collect();
    if fulls.len() <= keep_full.max(1) as usize {
        return Ok(());
    }
    let oldest_kept = fulls[fulls.len() - keep_full.max(1) as usize];
    for (path, _, seq) in archives {
        if seq < oldest_kept {
            fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}
