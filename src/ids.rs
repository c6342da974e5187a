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

/// Declares an id newtype: stored and sent as the plain string it wraps (so records and
/// the API keep their shape), read as `&str` where text is wanted, and never mistaken for
/// another kind of id.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
            serde::Serialize, serde::Deserialize, schemars::JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                Self(random_id())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&$name> for $name {
            fn eq(&self, other: &&$name) -> bool {
                self == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;

            fn from_str(id: &str) -> Result<Self, Self::Err> {
                Ok(Self(id.to_owned()))
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// An account (a tenant: one company's users, sessions and key).
    AccountId
);
id_type!(
    /// A user of an account: a technician or an account admin.
    UserId
);
id_type!(
    /// A support session.
    SessionId
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored records and API bodies keep their shape: an id is its plain string.
    #[test]
    fn an_id_is_stored_and_sent_as_its_plain_string() {
        let id = SessionId::random();
        let json = serde_json::to_string(&id).expect("serialise");
        assert_eq!(json, format!("\"{id}\""));
        let back: SessionId = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, id);
        assert_eq!(id.len(), 32, "128 random bits as hex");
    }
}
