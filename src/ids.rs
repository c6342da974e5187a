//! Random identifiers and tokens, and the hex SHA-256 used to key and compare them. A leaf:
//! it imports nothing of the appliance, so every module may use it.

use rand::Rng;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = OsRng.r#gen();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// 128 random bits as hex: ids that appear in URLs.
pub fn random_id() -> String {
    let bytes: [u8; 16] = OsRng.r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
