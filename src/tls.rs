//! The appliance's own certificate authority and the rustls server configuration.
//!
//! On first start an appliance CA is created and kept in `<data_dir>/tls/`; IT can
//! download it at `/ca.pem` and distribute it. The server certificate is issued by that
//! CA on every start, so its names always match the current configuration, while the CA
//! (the thing browsers trust) stays the same across restarts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the appliance CA in {path} is damaged: {message}")]
    BadCa { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the HTTPS listener needs, plus the CA certificate to hand out.
pub struct ApplianceTls {
    pub server_config: Arc<ServerConfig>,
    pub ca_pem: String,
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
/// Browsers cap leaf lifetimes; 397 days is the longest they accept from public CAs and a
/// sane value for a private one too.
const LEAF_DAYS: i64 = 397;
const CA_YEARS: i64 = 20;

/// Mozilla's "intermediate" profile: TLS 1.2 and 1.3, forward-secret AEAD suites only.
pub fn crypto_provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{self, cipher_suite as cs};
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// Loads (or on first start creates) the appliance CA and issues a fresh server
/// certificate for `names` (DNS names or IP addresses).
pub fn load_or_create(data_dir: &Path, names: &[String]) -> Result<ApplianceTls, TlsError> {
    let dir = data_dir.join("tls");
    fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
        path: dir.clone(),
        source,
    })?;
    let (ca_pem, ca_key) = load_or_create_ca(&dir)?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Sightline appliance");
        dn
    };
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(LEAF_DAYS);
    let leaf = params.signed_by(&leaf_key, &issuer)?;

    let ca_der = pem_to_der(&ca_pem).ok_or_else(|| TlsError::BadCa {
        path: dir.join(CA_CERT),
        message: "not a PEM certificate".into(),
    })?;
    let chain = vec![leaf.der().clone(), ca_der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));

    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ApplianceTls {
        server_config: Arc::new(config),
        ca_pem,
    })
}

/// The CA's parameters are rebuilt identically on every start, so that an issuer made
/// from them and the stored key signs certificates that chain to the stored CA.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sightline");
    dn.push(DnType::CommonName, "Sightline appliance CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn load_or_create_ca(dir: &Path) -> Result<(String, KeyPair), TlsError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    if cert_path.exists() && key_path.exists() {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| TlsError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| TlsError::BadCa {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        return Ok((cert_pem, key));
    }

    let key = KeyPair::generate()?;
    let mut params = ca_params();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * CA_YEARS);
    let cert = params.self_signed(&key)?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    Ok((cert.pem(), key))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::files::write_private(path, bytes).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()
}

/// The names the server certificate should carry by default: loopback, the host name,
/// and whatever the operator configured.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = default_names(&[]);
        let first = load_or_create(dir.path(), &names).expect("first");
        let second = load_or_create(dir.path(), &names).expect("second");
        assert_eq!(first.ca_pem, second.ca_pem);
        let mode = fs::metadata(dir.path().join("tls").join(CA_KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "CA key must not be group/other readable");
    }

    #[test]
    fn only_aead_suites_are_offered() {
        for suite in crypto_provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
    }
}
