//! The appliance's own certificate authority and the rustls server configuration.
//!
//! On first start an appliance CA is created and kept in `<data_dir>/tls/`; IT can
//! download it at `/ca.pem` and distribute it. The server certificate is issued by that
//! CA on every start, so its names always match the current configuration, while the CA
//! (the thing browsers trust) stays the same across restarts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Store, StoreError};

mod constraints;
pub mod imported;
use constraints::Permitted;
pub use imported::{CertError, CertInfo};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the appliance CA in {path} is damaged: {message}")]
    BadCa { path: PathBuf, message: String },
    #[error(
        "the appliance CA certificate {0} is there but its key is not in the store; restore the data directory from a backup"
    )]
    CaKeyMissing(PathBuf),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the HTTPS listener needs, plus the CA certificate to hand out.
pub struct ApplianceTls {
    pub server_config: Arc<ServerConfig>,
    pub ca_pem: String,
    /// Names asked for that the CA's name constraints do not permit; they are left out of
    /// the server certificate (a browser would refuse the whole certificate otherwise).
    pub refused_names: Vec<String>,
    /// What is served, and the switch to an imported certificate and back.
    pub certificates: Arc<Certificates>,
}

const CA_CERT: &str = "ca.pem";
/// Where releases up to 0.2 kept the CA key in plaintext; moved into the store on start.
const LEGACY_CA_KEY: &str = "ca-key.pem";
/// Mozilla's intermediate profile allows at most 366 days.
const LEAF_DAYS: i64 = 365;
/// The server certificate is issued anew this often, so a long-running appliance never
/// serves one near its end.
const LEAF_RENEW_DAYS: i64 = 30;
/// Long enough that IT distributes the CA rarely, short enough to be revisited.
const CA_YEARS: i64 = 5;

/// The CA key and what the CA may sign, sealed in the store like every other secret.
#[derive(Serialize, Deserialize)]
struct CaRecord {
    key_pem: String,
    /// The name constraints the CA was created with; `None` for a CA made by a release
    /// that set none (it may sign any name).
    permitted: Option<Permitted>,
}

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

/// Loads (or on first start creates) the appliance CA — its certificate in
/// `<data_dir>/tls/ca.pem`, its key sealed in the store — and serves server certificates
/// it issues for `names` (DNS names or IP addresses), renewed while the appliance runs.
///
/// `required` are the names an imported certificate must cover (the public URL's host and
/// the configured server names); one that is there is served instead, if it checks out.
pub fn load_or_create(
    store: &Store,
    data_dir: &Path,
    names: &[String],
    required: &[String],
) -> Result<ApplianceTls, TlsError> {
    let dir = data_dir.join("tls");
    fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
        path: dir.clone(),
        source,
    })?;
    let (ca_pem, record) = load_or_create_ca(store, &dir, names)?;
    let ca_key = KeyPair::from_pem(&record.key_pem).map_err(|e| TlsError::BadCa {
        path: dir.join(CA_CERT),
        message: format!("the stored key: {e}"),
    })?;
    let ca_der = pem_to_der(&ca_pem).ok_or_else(|| TlsError::BadCa {
        path: dir.join(CA_CERT),
        message: "not a PEM certificate".into(),
    })?;
    let (names, refused_names): (Vec<String>, Vec<String>) = names
        .iter()
        .cloned()
        .partition(|n| record.permitted.as_ref().is_none_or(|p| p.allows(n)));
    let provider = Arc::new(crypto_provider());
    let leaf = Leaf {
        issuer: Issuer::new(ca_params(), ca_key),
        ca_der,
        names,
        provider: provider.clone(),
    };
    let current = leaf.issue()?;
    // The import writes the key to this recipient without opening the store.
    let recipient = dir.join(imported::RECIPIENT_FILE);
    let line = format!("{}\n", store.appliance_recipient()?);
    crate::files::write_private(&recipient, line.as_bytes()).map_err(|source| TlsError::Io {
        path: recipient,
        source,
    })?;
    let resolver = Arc::new(Certificates {
        own: RenewingCert {
            leaf,
            current: RwLock::new(current),
        },
        imported: RwLock::new(None),
        store: store.clone(),
        data_dir: data_dir.to_owned(),
        required: required.to_vec(),
        provider: provider.clone(),
        reload_failures: Default::default(),
        read: Default::default(),
    });
    if let Err(e) = resolver.reload() {
        tracing::error!(error = %e, "the imported certificate is not used; serving the appliance CA's");
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ApplianceTls {
        server_config: Arc::new(config),
        ca_pem,
        refused_names,
        certificates: resolver,
    })
}

/// How server certificates are made: by the CA's key, for the appliance's names.
struct Leaf {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    names: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl Leaf {
    fn issue(&self) -> Result<(Arc<CertifiedKey>, OffsetDateTime), TlsError> {
        let leaf_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Sightline appliance");
            dn
        };
        params.subject_alt_names = self
            .names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Strict verifiers (OpenSSL's -x509_strict, Python 3.13) need the issuer's key id.
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let leaf = params.signed_by(&leaf_key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let certified = CertifiedKey::from_der(
            vec![leaf.der().clone(), self.ca_der.clone()],
            key,
            &self.provider,
        )?;
        Ok((
            Arc::new(certified),
            now + time::Duration::days(LEAF_RENEW_DAYS),
        ))
    }
}

/// Serves the current server certificate and issues the next one when it is due, so an
/// appliance that runs for years never serves an expired certificate.
struct RenewingCert {
    leaf: Leaf,
    current: RwLock<(Arc<CertifiedKey>, OffsetDateTime)>,
}

impl std::fmt::Debug for RenewingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewingCert")
            .field("names", &self.leaf.names)
            .finish_non_exhaustive()
    }
}

/// What the HTTPS listener serves: an imported certificate when there is a good one,
/// otherwise the appliance CA's. Swapped while the appliance runs; connections already
/// open keep theirs (a live session is not interrupted), new ones get the new one.
pub struct Certificates {
    own: RenewingCert,
    imported: RwLock<Option<(Arc<CertifiedKey>, CertInfo)>>,
    store: Store,
    data_dir: PathBuf,
    required: Vec<String>,
    provider: Arc<CryptoProvider>,
    /// Imported certificates refused at a reload (for `/metrics`).
    pub reload_failures: std::sync::atomic::AtomicU64,
    /// The imported files as the last reload found them: the watcher compares against it.
    read: std::sync::Mutex<imported::Fingerprint>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the imported certificate again: serves it if it checks out, the appliance
    /// CA's when there is none. A bad one changes nothing and is the error.
    pub fn reload(&self) -> Result<Option<CertInfo>, CertError> {
        // Taken before reading: a change made while reading is seen at the next look.
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) =
            imported::fingerprint(&self.data_dir);
        let checked = self.checked();
        if checked.is_err() {
            self.reload_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let next = checked?;
        let info = next.as_ref().map(|(_, info)| info.clone());
        *self.imported.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(info)
    }

    fn checked(&self) -> Result<Option<(Arc<CertifiedKey>, CertInfo)>, CertError> {
        Ok(match imported::load(&self.store, &self.data_dir)? {
            None => None,
            Some(candidate) => {
                Some(candidate.check(&self.required, OffsetDateTime::now_utc(), &self.provider)?)
            }
        })
    }

    /// Whether the imported files changed since the last reload read them.
    pub fn files_changed(&self) -> bool {
        *self.read.lock().unwrap_or_else(|p| p.into_inner())
            != imported::fingerprint(&self.data_dir)
    }

    /// The certificate served now.
    pub fn info(&self) -> Option<CertInfo> {
        if let Some((_, info)) = &*self.imported.read().unwrap_or_else(|p| p.into_inner()) {
            return Some(info.clone());
        }
        imported::describe(&self.own.current().cert, "appliance_ca")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some((cert, _)) = &*self.imported.read().unwrap_or_else(|p| p.into_inner()) {
            return Some(cert.clone());
        }
        self.own.resolve(hello)
    }
}

impl RenewingCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .map(|c| c.0.clone())
            .unwrap_or_else(|p| p.into_inner().0.clone())
    }
}

impl ResolvesServerCert for RenewingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (cert, renew_at) = self
            .current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if OffsetDateTime::now_utc() < renew_at {
            return Some(cert);
        }
        match self.leaf.issue() {
            Ok(next) => {
                let cert = next.0.clone();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
                Some(cert)
            }
            // Still valid for most of a year; try again at the next handshake.
            Err(_) => Some(cert),
        }
    }
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

fn ca_records(store: &Store) -> Result<crate::store::Collection<CaRecord>, StoreError> {
    store.global("appliance_ca")
}

fn load_or_create_ca(
    store: &Store,
    dir: &Path,
    names: &[String],
) -> Result<(String, CaRecord), TlsError> {
    let cert_path = dir.join(CA_CERT);
    let legacy_key = dir.join(LEGACY_CA_KEY);
    let records = ca_records(store)?;
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })
    };
    if cert_path.exists() {
        let cert_pem = read(&cert_path)?;
        if legacy_key.exists() {
            seal_legacy_key(store, &records, &legacy_key, &read(&legacy_key)?)?;
        }
        let record = records
            .get("ca")?
            .ok_or_else(|| TlsError::CaKeyMissing(cert_path.clone()))?;
        return Ok((cert_pem, record));
    }

    let key = KeyPair::generate()?;
    let permitted = Permitted::for_names(names);
    let mut params = ca_params();
    params.name_constraints = Some(permitted.constraints());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * CA_YEARS);
    let cert = params.self_signed(&key)?;
    let record = CaRecord {
        key_pem: key.serialize_pem(),
        permitted: Some(permitted),
    };
    records.put("ca", &record)?;
    store.flush_blocking()?;
    crate::files::write_private(&cert_path, cert.pem().as_bytes()).map_err(|source| {
        TlsError::Io {
            path: cert_path.clone(),
            source,
        }
    })?;
    Ok((cert.pem(), record))
}

/// A CA key an earlier release left in plaintext moves into the store, and the file is
/// overwritten and removed once the store holds it durably.
fn seal_legacy_key(
    store: &Store,
    records: &crate::store::Collection<CaRecord>,
    path: &Path,
    key_pem: &str,
) -> Result<(), TlsError> {
    KeyPair::from_pem(key_pem).map_err(|e| TlsError::BadCa {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    records.put(
        "ca",
        &CaRecord {
            key_pem: key_pem.to_owned(),
            permitted: None,
        },
    )?;
    store.flush_blocking()?;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    crate::files::write_private(path, &vec![0u8; key_pem.len()]).map_err(io)?;
    fs::remove_file(path).map_err(io)
}

/// What `sightline check` says about the CA: it can run while the appliance holds the
/// store, so it reads only the certificate.
pub fn check(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("tls").join(CA_CERT);
    if !path.exists() {
        return Ok("no CA yet; it is created on first start".into());
    }
    let pem = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der =
        pem_to_der(&pem).ok_or_else(|| format!("{} is not a PEM certificate", path.display()))?;
    let not_after = not_after(&der).ok_or_else(|| format!("{} cannot be read", path.display()))?;
    let left = not_after - OffsetDateTime::now_utc();
    if left.is_negative() {
        return Err(format!("the appliance CA expired on {}", not_after.date()));
    }
    if left < time::Duration::days(90) {
        return Err(format!(
            "the appliance CA expires on {} ({} days); issue and distribute a new one",
            not_after.date(),
            left.whole_days()
        ));
    }
    if legacy_key_in(data_dir) {
        return Ok(format!(
            "appliance CA valid until {}; its plaintext key is sealed into the store at the next start",
            not_after.date()
        ));
    }
    Ok(format!("appliance CA valid until {}", not_after.date()))
}

fn legacy_key_in(data_dir: &Path) -> bool {
    data_dir.join("tls").join(LEGACY_CA_KEY).exists()
}

/// The end of a certificate's validity.
fn not_after(der: &[u8]) -> Option<OffsetDateTime> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let end = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration();
    OffsetDateTime::from_unix_timestamp(i64::try_from(end.as_secs()).ok()?).ok()
}

fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
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

    fn store(dir: &Path) -> Store {
        Store::open_data_dir(dir, crate::store::DEFAULT_CACHE_BYTES).expect("store")
    }

    #[test]
    fn ca_is_created_once_and_reused_and_its_key_lives_only_in_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let names = default_names(&[]);
        let first = load_or_create(&store, dir.path(), &names, &[]).expect("first");
        let second = load_or_create(&store, dir.path(), &names, &[]).expect("second");
        assert_eq!(first.ca_pem, second.ca_pem);
        assert!(first.refused_names.is_empty(), "{:?}", first.refused_names);
        assert!(!dir.path().join("tls").join(LEGACY_CA_KEY).exists());
        let mode = fs::metadata(dir.path().join("tls").join(CA_CERT))
            .expect("cert")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }

    #[test]
    fn a_plaintext_key_of_an_earlier_release_moves_into_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = dir.path().join("tls");
        fs::create_dir_all(&tls).expect("dir");
        let key = KeyPair::generate().expect("key");
        let mut params = ca_params();
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(3650);
        let cert = params.self_signed(&key).expect("ca");
        fs::write(tls.join(CA_CERT), cert.pem()).expect("cert");
        fs::write(tls.join(LEGACY_CA_KEY), key.serialize_pem()).expect("key");
        let store = store(dir.path());
        let names = vec!["support.anywhere.example".to_owned()];
        let loaded = load_or_create(&store, dir.path(), &names, &[]).expect("loaded");
        assert_eq!(loaded.ca_pem, cert.pem(), "the CA browsers trust is kept");
        assert!(
            loaded.refused_names.is_empty(),
            "an old CA may sign any name"
        );
        assert!(
            !tls.join(LEGACY_CA_KEY).exists(),
            "the plaintext key is gone"
        );
        load_or_create(&store, dir.path(), &names, &[]).expect("and found in the store");
    }

    #[test]
    fn a_certificate_without_its_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        load_or_create(&store, dir.path(), &default_names(&[]), &[]).expect("first");
        drop(store);
        fs::remove_file(dir.path().join("store.redb")).expect("rm");
        let store = super::tests::store(dir.path());
        let e = load_or_create(&store, dir.path(), &[], &[])
            .err()
            .expect("refused");
        assert!(matches!(e, TlsError::CaKeyMissing(_)), "{e}");
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
