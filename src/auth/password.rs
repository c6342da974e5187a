//! Password hashing (argon2id) and the password policy.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;

/// OWASP's minimum for argon2id: 19 MiB of memory, two passes, one lane.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;
/// The policy floor; an account may raise the minimum length but never lower it.
pub const FLOOR_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 128;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash(password: &str) -> Option<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .ok()
        .map(|h| h.to_string())
}

pub fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Whether a stored hash was made with weaker or different parameters than today's, so
/// that it should be replaced after the next successful login.
pub fn needs_rehash(hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() != MEMORY_KIB
        || params.t_cost() != PASSES
        || params.p_cost() != LANES
}

/// Why a password was refused. The text is shown to the person choosing the password and
/// is never logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("the password must have at least {0} characters")]
    TooShort(usize),
    #[error("the password may have at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("the password must contain letters and digits")]
    NeedsLettersAndDigits,
    #[error(
        "this password is too common or too easy to guess; choose a longer, less predictable one"
    )]
    TooGuessable,
    #[error(
        "this password is built from your own details (email, name or organisation); choose one that is not"
    )]
    BuiltFromDetails,
}

/// A password made only of known parts (dictionary words and names, also in look-alike
/// spelling, keyboard walks, sequences, repeats, dates) is common if together they come
/// to fewer than a million guesses (zxcvbn's score 2). A password with a part of its own
/// (what zxcvbn must brute-force) is not common, whatever the estimate: of 100,000
/// random 8-character passwords, 31 estimate below a million because three or four of
/// their characters spell a word in look-alike letters; the floor must accept them.
const MIN_GUESSES_SCORE: u8 = 2;
/// Letters a password must have besides the user's own details.
const MIN_OWN_LETTERS: usize = 4;

/// The one password rule: at least `min_length` characters (never fewer than
/// [`FLOOR_LENGTH`]), at most [`MAX_LENGTH`], letters and digits; not a common password
/// or pattern; and not built from the user's details (`context`: email, name,
/// organisation) with only digits or symbols added.
pub fn check(password: &str, min_length: usize, context: &[&str]) -> Result<(), PolicyViolation> {
    let min_length = min_length.max(FLOOR_LENGTH);
    let length = password.chars().count();
    if length < min_length {
        return Err(PolicyViolation::TooShort(min_length));
    }
    if length > MAX_LENGTH {
        return Err(PolicyViolation::TooLong);
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_numeric()) {
        return Err(PolicyViolation::NeedsLettersAndDigits);
    }
    let words = detail_words(context);
    if built_from(password, &words) {
        return Err(PolicyViolation::BuiltFromDetails);
    }
    // zxcvbn's cost grows with length; beyond 64 characters a password that passed the
    // rules above is strong by length alone.
    if length <= 64 {
        let inputs: Vec<&str> = words
            .iter()
            .map(String::as_str)
            .chain(context.iter().copied())
            .collect();
        let estimate = zxcvbn::zxcvbn(password, &inputs);
        let only_known_parts = estimate.sequence().iter().all(|part| {
            !matches!(
                part.pattern,
                zxcvbn::matching::patterns::MatchPattern::BruteForce
            )
        });
        if only_known_parts && (estimate.score() as u8) < MIN_GUESSES_SCORE {
            return Err(PolicyViolation::TooGuessable);
        }
    }
    Ok(())
}

/// The words of the user's details a password must not be made of: the email's local part
/// and domain labels (not the top-level domain), and each word of the name and
/// organisation, lowercased, of three letters or more.
fn detail_words(context: &[&str]) -> Vec<String> {
    let mut words = Vec::new();
    for detail in context {
        let detail = detail.to_lowercase();
        let detail = match detail.rsplit_once('@') {
            // "ada.lovelace@mail.example.com": ada, lovelace, adalovelace, mail, example.
            Some((local, domain)) => {
                let joined: String = local.chars().filter(|c| c.is_alphanumeric()).collect();
                words.push(joined);
                let labels: Vec<&str> = domain.split('.').collect();
                format!(
                    "{local} {}",
                    labels[..labels.len().saturating_sub(1)].join(" ")
                )
            }
            None => detail,
        };
        words.extend(
            detail
                .split(|c: char| !c.is_alphanumeric())
                .map(str::to_owned),
        );
    }
    words.retain(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 3);
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    words.dedup();
    words
}

/// Whether the password is the user's detail words with little else: fewer than
/// [`MIN_OWN_LETTERS`] letters remain once they (also in common look-alike spelling,
/// "l0vel4ce") are taken out.
fn built_from(password: &str, words: &[String]) -> bool {
    let plain: Vec<char> = password
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '0' => 'o',
            '1' | '!' => 'l',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' => 't',
            other => other,
        })
        .collect();
    let mut taken = vec![false; plain.len()];
    for word in words {
        let word: Vec<char> = word.chars().collect();
        if word.len() > plain.len() {
            continue;
        }
        for start in 0..=plain.len() - word.len() {
            if plain[start..start + word.len()] == word[..] {
                taken[start..start + word.len()].fill(true);
            }
        }
    }
    if !taken.contains(&true) {
        return false;
    }
    let own_letters = password
        .to_lowercase()
        .chars()
        .zip(&taken)
        .filter(|(c, taken)| !**taken && c.is_alphabetic())
        .count();
    own_letters < MIN_OWN_LETTERS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_rules() {
        assert_eq!(check("short1", 8, &[]), Err(PolicyViolation::TooShort(8)));
        assert_eq!(
            check("lettersonlyhere", 8, &[]),
            Err(PolicyViolation::NeedsLettersAndDigits)
        );
        assert_eq!(
            check("12345678901", 8, &[]),
            Err(PolicyViolation::NeedsLettersAndDigits)
        );
        assert_eq!(
            check(&"a1".repeat(65), 8, &[]),
            Err(PolicyViolation::TooLong)
        );
    }

    #[test]
    fn common_passwords_are_refused() {
        for weak in [
            "password1",
            "Password123",
            "qwerty123",
            "abc12345",
            "letmein1",
            "Summer2024",
            "Passw0rd1",
            "iloveyou1",
            "qwer1234",
        ] {
            assert_eq!(
                check(weak, 8, &[]),
                Err(PolicyViolation::TooGuessable),
                "{weak}"
            );
        }
    }

    #[test]
    fn passwords_built_on_the_users_own_details_are_refused() {
        let me = [
            "ada.lovelace@example.com",
            "Ada Lovelace",
            "Example Utilities",
        ];
        for built in [
            "lovelace2024",
            "Lovelace1990",
            "adalovelace1990",
            "ada.lovelace#77",
            "L0vel4ce2024",
            "example2024",
            "Utilities2024!",
            "ada2024ada",
        ] {
            assert_eq!(
                check(built, 8, &me),
                Err(PolicyViolation::BuiltFromDetails),
                "{built}"
            );
        }
        // The details may appear in a password that is more than them.
        assert_eq!(check("lovelace kettle 47", 8, &me), Ok(()));
        assert_eq!(check("Camera4support", 8, &me), Ok(()));
    }

    #[test]
    fn random_passwords_of_the_floor_length_are_accepted() {
        use rand::Rng;
        let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            .chars()
            .collect();
        let mut rng = OsRng;
        let mut tried = 0;
        let mut refused = Vec::new();
        // A look-alike word inside makes the estimate low ("9Y94X": gygax); the rest of
        // the password is its own.
        assert_eq!(check("DTa9Y94X", 8, &[]), Ok(()));
        // Only when all of it is known words is a random draw refused ("nazca" + "god").
        assert_eq!(
            check("N42CA9Od", 8, &[]),
            Err(PolicyViolation::TooGuessable)
        );
        while tried < 5000 {
            let candidate: String = (0..FLOOR_LENGTH)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            if !candidate.chars().any(|c| c.is_ascii_digit())
                || !candidate.chars().any(char::is_alphabetic)
            {
                continue;
            }
            tried += 1;
            if check(&candidate, 8, &[]).is_err() {
                refused.push(candidate);
            }
        }
        // Measured: 5 of 200,000 (one in 40,000); more than 3 of 5,000 is all but impossible.
        assert!(refused.len() <= 3, "{refused:?}");
    }

    #[test]
    fn strong_passwords_up_to_128_characters_are_accepted() {
        assert_eq!(check("Camera4support", 8, &[]), Ok(()));
        assert_eq!(check("tangerine kettle 47 drift", 8, &[]), Ok(()));
        let long = format!("{}7", "horse battery staple ".repeat(3));
        assert_eq!(check(&long, 8, &[]), Ok(()));
        let longest = "x9".repeat(64);
        assert_eq!(check(&longest, 8, &[]), Ok(()));
    }

    #[test]
    fn an_account_can_raise_the_minimum_but_not_lower_it() {
        assert_eq!(
            check("Camera4support", 16, &[]),
            Err(PolicyViolation::TooShort(16))
        );
        assert_eq!(check("short1x", 4, &[]), Err(PolicyViolation::TooShort(8)));
    }

    #[test]
    fn hashes_use_argon2id_with_owasp_parameters() {
        let hashed = hash("correct horse 9").expect("hash");
        assert!(
            hashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hashed}"
        );
        assert!(verify(&hashed, "correct horse 9"));
        assert!(!verify(&hashed, "correct horse 8"));
        assert!(!needs_rehash(&hashed));
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).expect("params"),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string();
        assert!(needs_rehash(&weak));
        assert!(verify_any(&weak, "pw"));
    }

    /// Old hashes verify with their own parameters.
    fn verify_any(hash: &str, password: &str) -> bool {
        let parsed = PasswordHash::new(hash).expect("parse");
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }
}
