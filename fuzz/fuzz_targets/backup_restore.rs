//! The backup reader and restore, on archives anyone could make: the recipient is a
//! public key, so an archive encrypted to it passes decryption. The first byte says
//! whether the rest is the whole plaintext or its lines, to which the end marker with
//! the right digest is added (so that restore goes on to apply them). Restore must give
//! a result or a clear error, leave nothing half-restored, and write only inside the
//! directory it restores into.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use sightline::store::backup::restore;

/// The identity and key vault of a real backup (`fuzz/fixtures/backup/`, made by the
/// `seeds` program with the archives of the corpus): fuzzed archives that keep its
/// records' sealed values reach the code that installs and writes them.
struct Keys {
    identity_file: PathBuf,
    recipient: age::x25519::Recipient,
    vault: Vec<u8>,
    /// Kept until the process ends.
    _dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/backup");
        let identity_text =
            std::fs::read_to_string(fixtures.join("identity.txt")).expect("fixture identity");
        let identity: age::x25519::Identity = identity_text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("an identity line")
            .parse()
            .expect("an identity");
        let recipient = identity.to_public();
        let vault_plain = std::fs::read(fixtures.join("vault.json")).expect("fixture vault");
        let vault = age::encrypt(&recipient, &vault_plain).expect("encrypt");
        let dir = tempfile::tempdir_in(scratch()).expect("dir");
        let identity_file = dir.path().join("identity.txt");
        std::fs::write(&identity_file, identity_text).expect("write identity");
        Keys {
            identity_file,
            recipient,
            vault,
            _dir: dir,
        }
    })
}

fn scratch() -> &'static str {
    if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut plain = rest.to_vec();
    if mode & 1 == 1 {
        if !plain.ends_with(b"\n") {
            plain.push(b'\n');
        }
        let digest: String = Sha256::digest(&plain)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        plain.extend_from_slice(format!("{{\"t\":\"end\",\"sha256\":\"{digest}\"}}\n").as_bytes());
    }
    let keys = keys();
    let root = tempfile::tempdir_in(scratch()).expect("dir");
    let backups = root.path().join("backups");
    std::fs::create_dir(&backups).expect("mkdir");
    std::fs::write(backups.join("sightline-keys.age"), &keys.vault).expect("vault");
    let archive = age::encrypt(&keys.recipient, &plain).expect("encrypt");
    std::fs::write(backups.join("sightline-00000001-full.age"), archive).expect("archive");
    let target = root.path().join("restored");
    let restored = restore(&backups, &keys.identity_file, &target);
    let mut left: Vec<String> = std::fs::read_dir(root.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let expected: &[&str] = if restored.is_ok() {
        &["backups", "restored"]
    } else {
        &["backups"]
    };
    assert_eq!(left, expected, "restore left {left:?} ({restored:?})");
    let mut in_backups = std::fs::read_dir(&backups).expect("list").count();
    in_backups -= 2;
    assert_eq!(in_backups, 0, "restore wrote into the backup directory");
});
