//! The company's own certificate instead of the appliance CA's: `sightline cert import`
//! checks it, the running appliance serves it within seconds without dropping what is
//! connected, a renewal replaces it, `cert remove` goes back to the appliance CA; every
//! kind of bad certificate is refused with its own message and changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

pub(crate) const NAME: &str = "support.example.test";

pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub(crate) fn ca(name: &str) -> TestCa {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("ca");
    TestCa {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate by `ca` for `names`, valid from `days_from` to `days_to` (relative
/// to now): (certificate PEM, key PEM).
pub(crate) fn leaf(ca: &TestCa, names: &[&str], days_from: i64, days_to: i64) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().expect("dns")),
        })
        .collect();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days_from);
    params.not_after = now + time::Duration::days(days_to);
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

pub(crate) fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path
}

/// The appliance's CLI with a configuration naming the server name to cover.
pub(crate) fn cert_cli(app: &TestAppliance, args: &[&str]) -> std::process::Output {
    let config = write(
        app.dir.path(),
        "cert-test.toml",
        &format!("[http]\nserver_names = [\"{NAME}\"]\n"),
    );
    let mut all = vec!["--config", config.to_str().expect("path"), "cert"];
    all.extend_from_slice(args);
    sightline_at(&app.config.data_dir, &all)
}

pub(crate) fn import(app: &TestAppliance, chain: &Path, key: &Path) -> std::process::Output {
    cert_cli(
        app,
        &[
            "import",
            "--cert",
            chain.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
        ],
    )
}

/// The server certificate a client that trusts only `roots_pem` is given, if it is.
async fn served(app: &TestAppliance, roots_pem: &str) -> Option<CertificateDer<'static>> {
    let tcp = TcpStream::connect(app.addr()).await.expect("connect");
    let tls = trusting(roots_pem)
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

pub(crate) async fn until_served(app: &TestAppliance, roots_pem: &str, leaf_pem: &str) {
    use rustls::pki_types::pem::PemObject;
    let want = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).expect("leaf");
    for _ in 0..100 {
        if served(app, roots_pem).await.as_ref() == Some(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the imported certificate is not served after 10 s");
}

#[tokio::test]
async fn an_imported_certificate_is_served_renewed_and_removed_without_a_restart() {
    let app = TestAppliance::start_with(|c| c.http.server_names = vec![NAME.into()]).await;
    let mut admin = app.set_up().await;
    let (session, _, _) = create_session(&mut admin).await;
    // A console connected before the change keeps working through it.
    let mut console = admin.websocket().await;
    send(
        &mut console,
        json!({"type": "watch", "session_id": session}),
    )
    .await;
    recv_state(&mut console, "waiting").await;

    let corporate = ca("Example Corp Issuing CA");
    let work = tempfile::tempdir().expect("dir");
    let (first, first_key) = leaf(&corporate, &[NAME, "127.0.0.1"], -1, 90);
    let chain = write(
        work.path(),
        "chain.pem",
        &format!("{first}{}", corporate.pem),
    );
    let key = write(work.path(), "key.pem", &first_key);
    let out = import(&app, &chain, &key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("names:       {NAME}, 127.0.0.1")),
        "{stdout}"
    );
    assert!(stdout.contains("chain:       2 certificate(s)"), "{stdout}");
    until_served(&app, &corporate.pem, &first).await;
    let config = app.dir.path().join("cert-test.toml");
    let check = |app: &TestAppliance| {
        let out = sightline_at(
            &app.config.data_dir,
            &["--config", config.to_str().expect("path"), "check"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let report = check(&app);
    assert!(
        report.contains(&format!(
            "ok    imported certificate: CN={NAME}, valid until"
        )),
        "{report}"
    );
    // The imported key is not readable on disk.
    let sealed = std::fs::read(app.config.data_dir.join("tls/imported-key.age")).expect("key");
    assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));

    // The admin sees it, with its end; the metrics have it too.
    let mut corporate_admin = Client::for_address(app.addr(), &corporate.pem, "127.0.0.1");
    corporate_admin.cookie = admin.cookie.clone();
    let shown = corporate_admin.get("/api/certificate").await.json();
    assert_eq!(shown["source"], "imported");
    assert_eq!(shown["expires_soon"], false);
    assert!(
        shown["days_left"]
            .as_u64()
            .is_some_and(|d| (88..=90).contains(&d)),
        "{shown}"
    );
    let metrics = metrics_text(app.running().metrics_addr.expect("metrics")).await;
    assert!(
        metrics.contains("sightline_tls_certificate_imported 1"),
        "{metrics}"
    );
    let expiry = shown["not_after_ms"].as_u64().expect("end") / 1000;
    assert!(metrics.contains(&format!(
        "sightline_tls_certificate_expiry_timestamp_seconds {expiry}"
    )));

    // The console that was connected before is still connected and answered.
    send_raw(&mut console, Message::Ping(b"still there?".to_vec().into())).await;
    let pong = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut console),
    )
    .await
    .expect("an answer");
    assert!(matches!(pong, Some(Ok(Message::Pong(_)))), "{pong:?}");

    // A renewal that is due soon replaces it, and the console warns.
    let (second, second_key) = leaf(&corporate, &[NAME, "127.0.0.1"], -1, 20);
    let chain = write(
        work.path(),
        "chain.pem",
        &format!("{second}{}", corporate.pem),
    );
    let key = write(work.path(), "key.pem", &second_key);
    assert!(import(&app, &chain, &key).status.success());
    until_served(&app, &corporate.pem, &second).await;
    let shown = corporate_admin.get("/api/certificate").await.json();
    assert_eq!(shown["expires_soon"], true, "{shown}");
    let out = cert_cli(&app, &["show"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("served: the imported certificate"));
    // `sightline check` flags it: time to renew.
    let report = check(&app);
    assert!(
        report.contains(&format!("FAIL  imported certificate: CN={NAME} expires on"))
            && report.contains("import a renewed one"),
        "{report}"
    );

    // Removed: the appliance CA's is served again.
    let out = cert_cli(&app, &["remove"]);
    assert!(out.status.success());
    for _ in 0..100 {
        if served(&app, &app.running().ca_pem).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served(&app, &app.running().ca_pem).await.is_some());
    let shown = admin.get("/api/certificate").await.json();
    assert_eq!(shown["source"], "appliance_ca");
    assert_eq!(shown["expires_soon"], false);
}

#[tokio::test]
async fn bad_certificates_are_refused_each_with_its_reason_and_nothing_changes() {
    let app = TestAppliance::start_with(|c| c.http.server_names = vec![NAME.into()]).await;
    let corporate = ca("Example Corp Issuing CA");
    let other = ca("Someone Else CA");
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path();
    let (good, good_key) = leaf(&corporate, &[NAME, "127.0.0.1"], -1, 90);
    let (expired, expired_key) = leaf(&corporate, &[NAME], -100, -1);
    let (early, early_key) = leaf(&corporate, &[NAME], 5, 90);
    let (elsewhere, elsewhere_key) = leaf(&corporate, &["other.example.test"], -1, 90);
    let (_, unrelated_key) = leaf(&other, &[NAME], -1, 90);
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "expired",
            format!("{expired}{}", corporate.pem),
            expired_key,
            "expired on",
        ),
        (
            "not yet valid",
            early.clone(),
            early_key,
            "is not valid before",
        ),
        (
            "names not covered",
            elsewhere,
            elsewhere_key,
            "does not cover [\"support.example.test\"]",
        ),
        (
            "key of another certificate",
            good.clone(),
            unrelated_key,
            "does not belong",
        ),
        (
            "chain in the wrong order",
            format!("{}{good}", corporate.pem),
            good_key.clone(),
            "server certificate must come first",
        ),
        (
            "an issuer that is not the issuer",
            format!("{good}{}", other.pem),
            good_key.clone(),
            "the chain is out of order",
        ),
        (
            "no certificate",
            "junk".into(),
            good_key.clone(),
            "holds no PEM certificate",
        ),
        (
            "no key",
            good.clone(),
            "junk".into(),
            "holds no PEM private key",
        ),
    ];
    for (what, chain, key, message) in cases {
        let chain = write(dir, "chain.pem", &chain);
        let key = write(dir, "key.pem", &key);
        let out = import(&app, &chain, &key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} is refused");
        assert!(stderr.contains(message), "{what}: {stderr}");
        assert!(
            !app.config.data_dir.join("tls/imported.pem").exists(),
            "{what}: nothing is installed"
        );
    }
    let missing = import(&app, &dir.join("absent.pem"), &dir.join("key.pem"));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    // Still the appliance CA's.
    assert!(served(&app, &app.running().ca_pem).await.is_some());
}

/// A PKCS#12 bundle as IT exports it (made here with openssl, AES as OpenSSL 3 does).
#[tokio::test]
async fn a_pkcs12_bundle_is_imported_and_a_wrong_password_refused() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let app = TestAppliance::start_with(|c| c.http.server_names = vec![NAME.into()]).await;
    let corporate = ca("Example Corp Issuing CA");
    let work = tempfile::tempdir().expect("dir");
    let (good, good_key) = leaf(&corporate, &[NAME, "127.0.0.1"], -1, 90);
    let cert = write(work.path(), "cert.pem", &good);
    let key = write(work.path(), "key.pem", &good_key);
    let chain = write(work.path(), "ca.pem", &corporate.pem);
    let bundle = work.path().join("bundle.p12");
    let made = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:Tr0ub4dor"])
        .arg("-in")
        .arg(&cert)
        .arg("-inkey")
        .arg(&key)
        .arg("-certfile")
        .arg(&chain)
        .arg("-out")
        .arg(&bundle)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let wrong = write(work.path(), "wrong", "password\n");
    let right = write(work.path(), "right", "Tr0ub4dor\n");
    let args = |password: &Path| {
        vec![
            "import".to_owned(),
            "--pkcs12".to_owned(),
            bundle.to_string_lossy().into_owned(),
            "--password-file".to_owned(),
            password.to_string_lossy().into_owned(),
        ]
    };
    let refused = cert_cli(
        &app,
        &args(&wrong).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot be opened"));
    let out = cert_cli(
        &app,
        &args(&right).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain:       2 certificate(s)"));
    until_served(&app, &corporate.pem, &good).await;
}
