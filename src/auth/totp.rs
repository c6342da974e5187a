//! Time-based one-time passwords (RFC 6238) for two-factor sign-in, and recovery codes.

use rand::Rng;
use rand::rngs::OsRng;
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// RFC 6238 with the parameters every authenticator app supports: SHA-1, 6 digits, 30 s
/// steps, and one step of clock drift either way.
pub const STEP_SECS: u64 = 30;
const DIGITS: u8 = 6;
const SKEW: u16 = 1;

pub fn new_secret() -> Vec<u8> {
    let bytes: [u8; 20] = OsRng.r#gen();
    bytes.to_vec()
}

pub fn secret_base32(secret: &[u8]) -> String {
    Secret::from(secret).to_base32()
}

fn totp(secret: &[u8], account: &str, issuer: &str) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .with_account_name(account.replace(':', " "))
        .with_issuer(Some(issuer.replace(':', " ")))
        .build()
        .ok()
}

/// The `otpauth://` URI an authenticator app scans.
pub fn provisioning_uri(secret: &[u8], account: &str, issuer: &str) -> Option<String> {
    totp(secret, account, issuer)?.to_url().ok()
}

/// Checks a code at `unix_secs`; returns the time step it belongs to, which must be newer
/// than the last accepted one so that a code is accepted only once.
pub fn verify(secret: &[u8], code: &str, unix_secs: u64, last_step: Option<u64>) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(secret, "x", "x")?;
    let now = unix_secs / STEP_SECS;
    (now.saturating_sub(SKEW as u64)..=now + SKEW as u64)
        .filter(|step| last_step.is_none_or(|last| *step > last))
        .find(|step| totp.generate(step * STEP_SECS).to_string() == code)
}

/// Ten single-use recovery codes, shown once; the caller stores only their hashes.
pub fn recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    (0..10)
        .map(|_| {
            let raw: String = (0..10)
                .map(|_| ALPHABET[OsRng.gen_range(0..ALPHABET.len())] as char)
                .collect();
            format!("{}-{}", &raw[..5], &raw[5..])
        })
        .collect()
}

pub fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use totp_rs::Algorithm;

    use super::*;

    /// RFC 6238 appendix B: the test vectors for every listed time and algorithm.
    #[test]
    fn rfc_6238_test_vectors() {
        let seeds: [(Algorithm, &[u8]); 3] = [
            (Algorithm::SHA1, b"12345678901234567890"),
            (Algorithm::SHA256, b"12345678901234567890123456789012"),
            (
                Algorithm::SHA512,
                b"1234567890123456789012345678901234567890123456789012345678901234",
            ),
        ];
        let vectors: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1111111109, ["07081804", "68084774", "25091201"]),
            (1111111111, ["14050471", "67062674", "99943326"]),
            (1234567890, ["89005924", "91819424", "93441116"]),
            (2000000000, ["69279037", "90698825", "38618901"]),
            (20000000000, ["65353130", "77737706", "47863826"]),
        ];
        for (time, expected) in vectors {
            for ((algorithm, seed), want) in seeds.iter().zip(expected) {
                let totp = Builder::new()
                    .with_algorithm(*algorithm)
                    .with_digits(8)
                    .with_step_duration(30)
                    .with_secret(*seed)
                    .with_account_name("rfc")
                    .build()
                    .expect("totp");
                assert_eq!(
                    totp.generate(time).to_string(),
                    want,
                    "{algorithm:?} at {time}"
                );
            }
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_within_one_step_of_drift() {
        let secret = new_secret();
        let totp = totp(&secret, "a", "b").expect("totp");
        let now = 1_800_000_000;
        let code = totp.generate(now).to_string();
        let step = verify(&secret, &code, now, None).expect("accepted");
        assert_eq!(step, now / STEP_SECS);
        assert_eq!(
            verify(&secret, &code, now, Some(step)),
            None,
            "replay refused"
        );
        // One step late still works, two steps late does not.
        assert!(verify(&secret, &code, now + 30, None).is_some());
        assert!(verify(&secret, &code, now + 60, None).is_none());
        assert!(verify(&secret, "12345", now, None).is_none());
        assert!(verify(&secret, "abcdef", now, None).is_none());
    }

    #[test]
    fn provisioning_uri_carries_secret_and_issuer() {
        let secret = new_secret();
        let uri = provisioning_uri(&secret, "ada@example.com", "Sightline (Example)").expect("uri");
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&secret_base32(&secret)), "{uri}");
    }

    #[test]
    fn recovery_codes_are_ten_distinct_codes() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), 10);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
    }
}
