//! A certificate the company issued (its own CA, a public one), imported with
//! `sightline cert import` instead of the appliance CA's: checked before use, kept in the
//! data directory — the chain as PEM, the key encrypted to the appliance's own file key —
//! and picked up by the running appliance when the files change or on SIGHUP.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};

/// Below `<data_dir>/tls/`: the chain (leaf first) …
pub const CHAIN_FILE: &str = "imported.pem";
/// … the key, as an age file to the appliance's recipient …
pub const KEY_FILE: &str = "imported-key.age";
/// … and that recipient, written by the appliance so the import needs no store.
pub const RECIPIENT_FILE: &str = "import-recipient.txt";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    #[error("certificate {position} of the chain cannot be read: {message}")]
    Unreadable { position: usize, message: String },
    #[error("the PKCS#12 file cannot be opened: {0} (wrong password?)")]
    Pkcs12(String),
    #[error("the PKCS#12 file holds no private key with its certificate")]
    Pkcs12Empty,
    #[error("the private key does not belong to the certificate {subject}")]
    KeyMismatch { subject: String },
    #[error("the private key is of a type the appliance cannot sign with: {0}")]
    UnsupportedKey(String),
    #[error(
        "the chain is out of order: certificate {position} ({subject}) is not the issuer of certificate {child} (issued by {issuer}); give the server certificate first, then each issuer"
    )]
    OutOfOrder {
        position: usize,
        child: usize,
        subject: String,
        issuer: String,
    },
    #[error(
        "the first certificate ({subject}) is a CA certificate; the server certificate must come first"
    )]
    LeafIsCa { subject: String },
    #[error("certificate {subject} expired on {not_after}")]
    Expired { subject: String, not_after: String },
    #[error("certificate {subject} is not valid before {not_before}")]
    NotYetValid { subject: String, not_before: String },
    #[error(
        "the certificate does not cover {missing:?} (it names {named:?}); issue one for every name in http.public_url and http.server_names"
    )]
    NamesNotCovered {
        missing: Vec<String>,
        named: Vec<String>,
    },
    #[error("{0} is missing: start the appliance once (or run `sightline init`) before importing")]
    NoRecipient(PathBuf),
    #[error("the imported key cannot be opened with this appliance's keys (restored elsewhere?)")]
    KeySealedElsewhere,
    #[error("encrypting the key failed: {0}")]
    Encrypt(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A chain (leaf first) and its key, not yet checked.
pub struct Candidate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// What `sightline cert show` prints and the console and metrics report.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct CertInfo {
    /// `appliance_ca` or `imported`.
    pub source: String,
    pub subject: String,
    pub issuer: String,
    pub names: Vec<String>,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    /// SHA-256 of the server certificate, hex.
    pub sha256: String,
    pub chain_length: usize,
}

impl Candidate {
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|source| CertError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(CertError::NoCertificate(cert.to_owned()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|_| CertError::NoKey(key.to_owned()))?;
        Ok(Self { chain, key })
    }

    pub fn from_pkcs12(path: &Path, password: &str) -> Result<Self, CertError> {
        let data = fs::read(path).map_err(|source| CertError::Io {
            path: path.to_owned(),
            source,
        })?;
        let store = p12_keystore::KeyStore::from_pkcs12(
            &data,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| CertError::Pkcs12(e.to_string()))?;
        let chain = store
            .entries()
            .find_map(|(_, entry)| match entry {
                p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => Some(chain.clone()),
                _ => None,
            })
            .ok_or(CertError::Pkcs12Empty)?;
        Ok(Self {
            chain: chain
                .certs()
                .iter()
                .map(|c| CertificateDer::from(c.as_der().to_vec()))
                .collect(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec())),
        })
    }

    /// Checks the chain and key for serving `names` at `now`, and makes the key rustls
    /// serves.
    pub fn check(
        &self,
        names: &[String],
        now: OffsetDateTime,
        provider: &Arc<CryptoProvider>,
    ) -> Result<(Arc<CertifiedKey>, CertInfo), CertError> {
        let parsed = self
            .chain
            .iter()
            .enumerate()
            .map(|(i, der)| {
                x509_cert::Certificate::from_der(der).map_err(|e| CertError::Unreadable {
                    position: i + 1,
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = &parsed[0];
        let subject = |c: &x509_cert::Certificate| c.tbs_certificate().subject().to_string();
        if is_ca(leaf) {
            return Err(CertError::LeafIsCa {
                subject: subject(leaf),
            });
        }
        for (i, pair) in parsed.windows(2).enumerate() {
            if pair[0].tbs_certificate().issuer() != pair[1].tbs_certificate().subject() {
                return Err(CertError::OutOfOrder {
                    position: i + 2,
                    child: i + 1,
                    subject: subject(&pair[1]),
                    issuer: pair[0].tbs_certificate().issuer().to_string(),
                });
            }
        }
        for cert in &parsed {
            let validity = cert.tbs_certificate().validity();
            let start = unix(validity.not_before.to_unix_duration());
            let end = unix(validity.not_after.to_unix_duration());
            if end <= now {
                return Err(CertError::Expired {
                    subject: subject(cert),
                    not_after: crate::clock::rfc3339(millis(end)),
                });
            }
            if start > now {
                return Err(CertError::NotYetValid {
                    subject: subject(cert),
                    not_before: crate::clock::rfc3339(millis(start)),
                });
            }
        }
        let named = san_names(leaf);
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !named.iter().any(|c| covers(c, n)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(CertError::NamesNotCovered { missing, named });
        }
        let signing = provider
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| CertError::UnsupportedKey(e.to_string()))?;
        let certified = CertifiedKey::new(self.chain.clone(), signing);
        if certified.keys_match().is_err() {
            return Err(CertError::KeyMismatch {
                subject: subject(leaf),
            });
        }
        let validity = leaf.tbs_certificate().validity();
        let info = CertInfo {
            source: "imported".into(),
            subject: subject(leaf),
            issuer: leaf.tbs_certificate().issuer().to_string(),
            names: named,
            not_before_ms: millis(unix(validity.not_before.to_unix_duration())),
            not_after_ms: millis(unix(validity.not_after.to_unix_duration())),
            sha256: hex(&Sha256::digest(&self.chain[0])),
            chain_length: self.chain.len(),
        };
        Ok((Arc::new(certified), info))
    }

    /// Writes the chain and the key (encrypted to the appliance) into `<data_dir>/tls/`,
    /// each atomically; the key first, so a watcher that sees the new chain finds its key.
    pub fn install(&self, data_dir: &Path) -> Result<(), CertError> {
        let dir = data_dir.join("tls");
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CertError::Io { path, source }
        };
        let recipient_path = dir.join(RECIPIENT_FILE);
        let recipient = fs::read_to_string(&recipient_path)
            .map_err(|_| CertError::NoRecipient(recipient_path.clone()))?;
        let recipient: age::x25519::Recipient = recipient
            .trim()
            .parse()
            .map_err(|e: &str| CertError::Encrypt(e.to_owned()))?;
        let sealed = age::encrypt(&recipient, self.key.secret_der())
            .map_err(|e| CertError::Encrypt(e.to_string()))?;
        let key_path = dir.join(KEY_FILE);
        crate::files::write_private(&key_path, &sealed).map_err(io(&key_path))?;
        let pem: String = self
            .chain
            .iter()
            .map(|der| pem("CERTIFICATE", der))
            .collect();
        let chain_path = dir.join(CHAIN_FILE);
        crate::files::write_private(&chain_path, pem.as_bytes()).map_err(io(&chain_path))
    }
}

/// What `sightline check` says of an installed import (none when there is none): whether
/// it still covers the configured names and how long it has left. Its key is checked by
/// the appliance, which alone may open it.
pub fn check_installed(
    data_dir: &Path,
    names: &[String],
    now: OffsetDateTime,
) -> Option<Result<String, String>> {
    let path = data_dir.join("tls").join(CHAIN_FILE);
    if !path.exists() {
        return None;
    }
    let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(&path) {
        Ok(certs) => certs.filter_map(Result::ok).collect(),
        Err(e) => return Some(Err(format!("{}: {e}", path.display()))),
    };
    let Some(info) = describe(&chain, "imported") else {
        return Some(Err(format!(
            "{} holds no readable certificate",
            path.display()
        )));
    };
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !info.names.iter().any(|c| covers(c, n)))
        .collect();
    let end = crate::clock::rfc3339(info.not_after_ms);
    let now_ms = millis(now);
    let days = info.not_after_ms.saturating_sub(now_ms) / 86_400_000;
    Some(if info.not_after_ms <= now_ms {
        Err(format!(
            "{} expired on {end}; import a renewed one",
            info.subject
        ))
    } else if !missing.is_empty() {
        Err(format!("{} does not cover {missing:?}", info.subject))
    } else if days < 30 {
        Err(format!(
            "{} expires on {end} ({days} days); import a renewed one",
            info.subject
        ))
    } else {
        Ok(format!("{}, valid until {end} ({days} days)", info.subject))
    })
}

/// Removes an imported certificate; the appliance CA's serves again.
pub fn remove(data_dir: &Path) -> Result<bool, CertError> {
    let dir = data_dir.join("tls");
    let mut removed = false;
    for name in [CHAIN_FILE, KEY_FILE] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(CertError::Io { path, source }),
        }
    }
    Ok(removed)
}

/// The imported chain and key, if there are both.
pub fn load(store: &crate::store::Store, data_dir: &Path) -> Result<Option<Candidate>, CertError> {
    let dir = data_dir.join("tls");
    let chain_path = dir.join(CHAIN_FILE);
    let key_path = dir.join(KEY_FILE);
    if !chain_path.exists() && !key_path.exists() {
        return Ok(None);
    }
    let sealed = fs::read(&key_path).map_err(|source| CertError::Io {
        path: key_path.clone(),
        source,
    })?;
    let key = store
        .decrypt_for_appliance(&sealed)?
        .ok_or(CertError::KeySealedElsewhere)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&chain_path)
        .map_err(|_| CertError::NoCertificate(chain_path.clone()))?
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate(chain_path));
    }
    let key = PrivateKeyDer::try_from(key).map_err(|_| CertError::NoKey(key_path))?;
    Ok(Some(Candidate { chain, key }))
}

/// The imported files' sizes and modification times: what tells cheaply that they changed.
pub type Fingerprint = Vec<(u64, Option<std::time::SystemTime>)>;

pub fn fingerprint(data_dir: &Path) -> Fingerprint {
    let dir = data_dir.join("tls");
    [CHAIN_FILE, KEY_FILE]
        .iter()
        .map(|name| {
            fs::metadata(dir.join(name))
                .map(|m| (m.len(), m.modified().ok()))
                .unwrap_or((0, None))
        })
        .collect()
}

/// The description of a chain (leaf first) from `source` (`appliance_ca`, `imported`).
pub fn describe(chain: &[CertificateDer<'static>], source: &str) -> Option<CertInfo> {
    let leaf = x509_cert::Certificate::from_der(chain.first()?).ok()?;
    // The appliance CA's own end counts too: past it, the renewed certificates fail.
    let ends = chain
        .iter()
        .filter_map(|der| x509_cert::Certificate::from_der(der).ok())
        .map(|c| {
            millis(unix(
                c.tbs_certificate().validity().not_after.to_unix_duration(),
            ))
        })
        .min()?;
    Some(CertInfo {
        source: source.into(),
        subject: leaf.tbs_certificate().subject().to_string(),
        issuer: leaf.tbs_certificate().issuer().to_string(),
        names: san_names(&leaf),
        not_before_ms: millis(unix(
            leaf.tbs_certificate()
                .validity()
                .not_before
                .to_unix_duration(),
        )),
        not_after_ms: ends,
        sha256: hex(&Sha256::digest(&chain[0])),
        chain_length: chain.len(),
    })
}

fn is_ca(cert: &x509_cert::Certificate) -> bool {
    matches!(
        cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, BasicConstraints { ca: true, .. })))
    )
}

fn san_names(cert: &x509_cert::Certificate) -> Vec<String> {
    let Ok(Some((_, SubjectAltName(names)))) =
        cert.tbs_certificate().get_extension::<SubjectAltName>()
    else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(dns) => Some(dns.to_string().to_ascii_lowercase()),
            GeneralName::IpAddress(ip) => match ip.as_bytes() {
                [a, b, c, d] => Some(std::net::Ipv4Addr::new(*a, *b, *c, *d).to_string()),
                bytes if bytes.len() == 16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(bytes);
                    Some(std::net::Ipv6Addr::from(octets).to_string())
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether a certificate name covers a host name: exactly, or as a wildcard for one label
/// (`*.example.com` covers `support.example.com`, not `example.com` or `a.b.example.com`).
fn covers(certified: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if certified == name {
        return true;
    }
    match (certified.strip_prefix("*."), name.split_once('.')) {
        (Some(domain), Some((label, rest))) => {
            !label.is_empty() && rest == domain && name.parse::<std::net::IpAddr>().is_err()
        }
        _ => false,
    }
}

fn unix(d: std::time::Duration) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn millis(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0) * 1000
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("support.example.com", "Support.Example.com"));
        assert!(covers("*.example.com", "support.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.0.0.1", "127.0.0.1"));
        assert!(covers("127.0.0.1", "127.0.0.1"));
    }
}
