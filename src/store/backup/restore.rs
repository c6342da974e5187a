//! Restore: every archive decrypted and checked (age authentication, the end marker's
//! digest, the chain of incrementals) before the restored directory moves into place.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::store::keys::{MasterKey, write_private};
use crate::store::{Store, StoreError};

use super::*;

fn read_identity(path: &Path) -> Result<age::x25519::Identity, BackupError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| BackupError::BadIdentity(path.to_owned()))
}

/// Decrypts and checks one archive; returns its manifest and lines.
fn read_archive(
    path: &Path,
    identity: &age::x25519::Identity,
) -> Result<(Manifest, Vec<Line>), BackupError> {
    let encrypted = fs::read(path).map_err(io(path))?;
    let plain = age::decrypt(identity, &encrypted)
        .map_err(|_| BackupError::Undecryptable(path.to_owned()))?;
    let damaged = |why: &str| BackupError::Damaged(path.to_owned(), why.to_owned());
    let mut reader = BufReader::new(&plain[..]);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .map_err(|_| damaged("unreadable"))?;
    let manifest: Manifest = serde_json::from_str(&first).map_err(|_| damaged("no manifest"))?;
    if manifest.format != FORMAT {
        return Err(damaged("unknown format"));
    }
    let mut lines = Vec::new();
    let mut covered = first.len();
    let mut ended = false;
    for raw in reader.lines() {
        let raw = raw.map_err(|_| damaged("unreadable line"))?;
        let line: Line = serde_json::from_str(&raw).map_err(|_| damaged("malformed line"))?;
        if let Line::End { sha256 } = &line {
            if *sha256 != digest_hex(&plain[..covered]) {
                return Err(damaged("digest mismatch"));
            }
            ended = true;
            break;
        }
        covered += raw.len() + 1;
        lines.push(line);
    }
    if !ended {
        return Err(damaged("missing end marker (truncated)"));
    }
    Ok((manifest, lines))
}

/// Restores the newest complete backup chain from `directory` into the empty `target`
/// data directory, with a new master key. Records of accounts whose key is no longer in
/// the vault (deleted accounts) are left out: they cannot be decrypted by anyone.
pub fn restore(
    directory: &Path,
    identity_file: &Path,
    target: &Path,
) -> Result<RestoreReport, BackupError> {
    if target.exists() && fs::read_dir(target).map_err(io(target))?.next().is_some() {
        return Err(BackupError::TargetNotEmpty(target.to_owned()));
    }
    let identity = read_identity(identity_file)?;
    let vault_path = directory.join(VAULT_FILE);
    let vault_plain = age::decrypt(&identity, &fs::read(&vault_path).map_err(io(&vault_path))?)
        .map_err(|_| BackupError::Undecryptable(vault_path.clone()))?;
    let vault: BTreeMap<String, String> = serde_json::from_slice(&vault_plain)
        .map_err(|_| BackupError::Damaged(vault_path.clone(), "malformed key vault".into()))?;

    // The chain: the newest full backup and every incremental after it, in order.
    let archives = list(directory)?;
    let start = archives
        .iter()
        .rposition(|a| a.1 == Kind::Full)
        .ok_or_else(|| BackupError::NoBackup(directory.to_owned()))?;
    let mut chain = Vec::new();
    let mut previous: Option<String> = None;
    for (path, kind, _) in &archives[start..] {
        let (manifest, lines) = read_archive(path, &identity)?;
        if manifest.kind != *kind || (*kind == Kind::Incremental && manifest.base != previous) {
            return Err(BackupError::Damaged(
                path.clone(),
                "does not continue the previous backup (missing or reordered archive)".into(),
            ));
        }
        previous = Some(manifest.id.clone());
        chain.push(lines);
    }

    // Build next to the target and move into place only when everything applied.
    let staging = target.with_extension("restoring");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io(&staging))?;
    let result = apply(&staging, &vault, chain);
    match result {
        Ok(report) => {
            if target.exists() {
                fs::remove_dir(target).map_err(io(target))?;
            }
            fs::rename(&staging, target).map_err(io(target))?;
            Ok(report)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub archives: usize,
    pub records: usize,
    pub files: usize,
    pub skipped_without_key: usize,
}

/// A file path an archive may name: only the kinds of file a backup holds (the CA, and
/// the sealed stills and recordings under `files/<account>/`), so that an archive made
/// for the recipient by someone else — the recipient is a public key — can neither
/// replace the restored store, its master key, nor write or remove anything outside.
fn restorable<'a>(staging: &Path, path: &'a str) -> Result<&'a Path, BackupError> {
    let relative = Path::new(path);
    let normal: Option<Vec<&str>> = relative
        .components()
        .map(|c| match c {
            std::path::Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    let allowed = match normal.as_deref() {
        Some(
            [
                "tls",
                "ca.pem" | "ca-key.pem" | "imported.pem" | "imported-key.age",
            ],
        ) => true,
        Some(["files", _account, name]) => name.ends_with(".age"),
        _ => false,
    };
    if allowed {
        Ok(relative)
    } else {
        Err(BackupError::Damaged(
            staging.to_owned(),
            format!("a file path a backup never holds: {path:?}"),
        ))
    }
}

fn apply(
    staging: &Path,
    vault: &BTreeMap<String, String>,
    chain: Vec<Vec<Line>>,
) -> Result<RestoreReport, BackupError> {
    let master = MasterKey::generate();
    master
        .write(&staging.join(crate::store::keys::MASTER_KEY_FILE))
        .map_err(StoreError::from)?;
    let store = Store::open(staging, master)?;
    for (owner, material) in vault {
        let material = B64
            .decode(material)
            .map_err(|_| BackupError::Damaged(staging.to_owned(), "bad key material".into()))?;
        store.keyring().install(owner, &material)?;
    }
    let owner_of = |tree: &str| -> String {
        tree.strip_prefix("account/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("appliance")
            .to_owned()
    };
    let mut report = RestoreReport {
        archives: chain.len(),
        ..RestoreReport::default()
    };
    let decode = |s: &str| {
        B64.decode(s)
            .map_err(|_| BackupError::Damaged(staging.to_owned(), "bad encoding".into()))
    };
    for lines in chain {
        // (tree, key, value; `None`: removed), decoded before anything is written.
        let mut changes = Vec::new();
        for line in &lines {
            match line {
                Line::Record { tree, k, v } => {
                    if !vault.contains_key(&owner_of(tree)) {
                        report.skipped_without_key += 1;
                        continue;
                    }
                    changes.push((tree, decode(k)?, Some(decode(v)?)));
                    report.records += 1;
                }
                Line::Removed { tree, k } => changes.push((tree, decode(k)?, None)),
                _ => {}
            }
        }
        // One transaction per archive: a restore of many records is not many commits.
        store.engine().write(|w| {
            for (tree, k, v) in &changes {
                match v {
                    Some(v) => w.insert(tree, k, v)?,
                    None => {
                        w.remove(tree, k)?;
                    }
                }
            }
            Ok(())
        })?;
        for line in lines {
            match line {
                Line::File { path, v } => {
                    let relative = restorable(staging, &path)?;
                    let owner = path
                        .strip_prefix("files/")
                        .and_then(|r| r.split('/').next());
                    if owner.is_some_and(|o| !vault.contains_key(o)) {
                        report.skipped_without_key += 1;
                        continue;
                    }
                    let dest = staging.join(relative);
                    if let Some(parent) = dest.parent() {
                        fs::create_dir_all(parent).map_err(io(parent))?;
                    }
                    write_private(&dest, &decode(&v)?).map_err(io(&dest))?;
                    report.files += 1;
                }
                Line::FileRemoved { path } => {
                    let _ = fs::remove_file(staging.join(restorable(staging, &path)?));
                }
                _ => {}
            }
        }
    }
    store.flush_blocking()?;
    Ok(report)
}
