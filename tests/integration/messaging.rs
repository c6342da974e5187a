//! Invitations by e-mail and SMS, against real servers on loopback: aiosmtpd (STARTTLS and
//! implicit TLS, AUTH required; `tests/fixtures/smtp_server.py`) and an HTTPS webhook
//! receiver standing in for the company's SMS gateway. The mailed link is used to join;
//! refusals, a relay that is down, bad addresses, the hourly allowance and bad setups
//! each get their own answer, and the security log never names a recipient.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::certificates::{TestCa, ca, leaf, write};
use crate::common::*;

const USER: &str = "sightline";
const PASSWORD: &str = "relay-Passw0rd";
const SECRET: &str = "gateway-key-42";

/// The Python that has aiosmtpd (`scripts/test-all.sh` makes the venv), if any.
fn smtp_python() -> Option<PathBuf> {
    let from_env = std::env::var_os("SIGHTLINE_TEST_SMTP_PYTHON").map(PathBuf::from);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("aiosmtpd-venv/bin/python");
    [from_env, Some(target)]
        .into_iter()
        .flatten()
        .find(|p| p.exists())
}

struct SmtpServer {
    child: Child,
    starttls: u16,
    tls: u16,
    out: PathBuf,
}

impl SmtpServer {
    fn start(python: &Path, dir: &Path, ca: &TestCa) -> Self {
        let (cert, key) = leaf(ca, &["localhost", "127.0.0.1"], -1, 30);
        let cert = write(dir, "smtp-cert.pem", &cert);
        let key = write(dir, "smtp-key.pem", &key);
        let out = dir.join("mail");
        std::fs::create_dir_all(&out).expect("mail dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(["--cert", cert.to_str().expect("utf-8")])
            .args(["--key", key.to_str().expect("utf-8")])
            .args(["--user", USER, "--password", PASSWORD])
            .args(["--out", out.to_str().expect("utf-8")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("aiosmtpd starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ports");
        let ports: Value = serde_json::from_str(&line).expect("ports as JSON");
        let port = |k: &str| u16::try_from(ports[k].as_u64().expect("port")).expect("u16");
        Self {
            starttls: port("starttls"),
            tls: port("tls"),
            child,
            out,
        }
    }

    /// The messages received so far, in order.
    fn messages(&self) -> Vec<Value> {
        let mut files: Vec<_> = std::fs::read_dir(&self.out)
            .expect("mail dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
        });
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the SMS gateway received: method, headers and body of each request.
type Received = Arc<Mutex<Vec<(String, hyper::HeaderMap, Value)>>>;

/// An HTTPS receiver on loopback answering 200, or 500 for the number `+4915550000500`.
async fn sms_gateway(ca: &TestCa) -> (u16, Received) {
    let (cert, key) = leaf(ca, &["localhost", "127.0.0.1"], -1, 30);
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received: Received = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let method = request.method().to_string();
                            let headers = request.headers().clone();
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let failing = body.to_string().contains("+4915550000500");
                            log.lock().expect("log").push((method, headers, body));
                            let status = if failing { 500 } else { 200 };
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(hyper::body::Bytes::from_static(b"{}")))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, received)
}

fn private(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = write(dir, name, content);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

struct Setup {
    ca_file: PathBuf,
    password_file: PathBuf,
    secret_file: PathBuf,
    sms_port: u16,
}

fn configure(config: &mut sightline::config::Config, setup: &Setup, smtp_port: u16, tls: &str) {
    config.http.public_url = Some("https://support.example.test".into());
    let smtp = &mut config.smtp;
    smtp.host = Some("127.0.0.1".into());
    smtp.port = Some(smtp_port);
    smtp.tls = match tls {
        "tls" => sightline::config::SmtpTls::Tls,
        _ => sightline::config::SmtpTls::Starttls,
    };
    smtp.from = Some("IT Support <support@example.test>".into());
    smtp.username = Some(USER.into());
    smtp.password_file = Some(setup.password_file.clone());
    smtp.ca_file = Some(setup.ca_file.clone());
    let sms = &mut config.sms;
    sms.url = Some(format!("https://127.0.0.1:{}/v1/messages", setup.sms_port));
    sms.headers = [("Authorization".to_owned(), "Bearer {secret}".to_owned())].into();
    sms.secret_file = Some(setup.secret_file.clone());
    sms.body =
        r#"{"recipient": "{number}", "message": {"text": "{text}"}, "sender": "Support"}"#.into();
    sms.ca_file = Some(setup.ca_file.clone());
}

async fn send(client: &mut Client, session: &str, body: Value) -> Response {
    client
        .post_json(&format!("/api/sessions/{session}/invitations"), &body)
        .await
}

/// Sends and expects a refusal with `code` whose message names `words`.
async fn refused(client: &mut Client, session: &str, body: &Value, code: &str, words: &str) {
    let answer = send(client, session, body.clone()).await;
    assert_eq!(answer.json()["error"], code, "{body}: {}", answer.text());
    let status = sightline::api::status_of(code);
    assert_eq!(answer.status, status, "{body}: {}", answer.text());
    let message = answer.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains(words), "{body}: {message}");
}

/// The link a message carries, and its token.
fn link_in(text: &str) -> (String, String) {
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with("https://support.example.test/c#"))
        .expect("a link in the message")
        .to_owned();
    let token = link.split_once("/c#").expect("token").1.to_owned();
    (link, token)
}

#[tokio::test]
async fn invitations_reach_the_customer_by_mail_and_sms() {
    let Some(python) = smtp_python() else {
        eprintln!("skipped: no Python with aiosmtpd (scripts/test-all.sh makes one)");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let test_ca = ca("Relay Test CA");
    let smtp = SmtpServer::start(&python, dir.path(), &test_ca);
    let (sms_port, received) = sms_gateway(&test_ca).await;
    let setup = Setup {
        ca_file: write(dir.path(), "ca.pem", &test_ca.pem),
        password_file: private(dir.path(), "smtp-password", &format!("{PASSWORD}\n")),
        secret_file: private(dir.path(), "sms-secret", SECRET),
        sms_port,
    };
    let mut app =
        TestAppliance::start_with(|c| configure(c, &setup, smtp.starttls, "starttls")).await;
    let mut admin = app.set_up().await;

    let created = admin.post_empty("/api/sessions").await;
    assert_eq!(created.json()["send_by"], json!(["email", "sms"]));
    let session = created.json()["session"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let pin = created.json()["pin"].as_str().expect("pin").to_owned();

    // E-mail over STARTTLS with AUTH, in German.
    let sent = send(
        &mut admin,
        &session,
        json!({"channel": "email", "to": "kunde@example.org", "language": "de"}),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    assert_eq!(sent.json()["to"], "k…@example.org");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail["to"], json!(["kunde@example.org"]));
    assert_eq!(mail["from"], "support@example.test");
    assert_eq!(mail["tls"], true, "STARTTLS was used");
    assert_eq!(mail["login"], USER, "AUTH was used");
    assert_eq!(mail["subject"], "Video-Support von Example Utilities");
    assert_eq!(mail["language"], "de");
    assert_eq!(
        (mail["content_type"].clone(), mail["charset"].clone()),
        (json!("text/plain"), json!("utf-8"))
    );
    let body = mail["body"].as_str().expect("body");
    assert!(
        body.contains("Ada Lovelace (Example Utilities) lädt Sie"),
        "{body}"
    );
    let (_, token) = link_in(body);
    assert!(!body.contains(&pin), "never the PIN with the link");

    // The mailed link is the customer's way in.
    let (mut tech, mut customer, _) = {
        let mut tech = admin.websocket().await;
        crate::common::send(&mut tech, json!({"type": "watch", "session_id": session})).await;
        recv_state(&mut tech, "waiting").await;
        let mut customer = app.client().websocket().await;
        let first = join(&mut customer, &token, None).await;
        assert_eq!(first["type"], "device", "{first}");
        (tech, customer, ())
    };
    recv_state(&mut tech, "joined").await;
    recv_state(&mut customer, "joined").await;

    // Once the customer is in, no further invitations for the session.
    let late = send(
        &mut admin,
        &session,
        json!({"channel": "sms", "to": "+491701234567"}),
    )
    .await;
    assert_eq!(
        (late.status, late.json()["error"].clone()),
        (409, json!("already_joined"))
    );

    // SMS through the webhook: method, secret header, the JSON body from the template.
    let (other, _, _) = create_session(&mut admin).await;
    let sent = send(
        &mut admin,
        &other,
        json!({"channel": "sms", "to": "+49 170 1234567"}),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    assert_eq!(sent.json()["to"], "+…567");
    {
        let log = received.lock().expect("log");
        let (method, headers, body) = log.last().expect("the gateway got it");
        assert_eq!(method, "POST");
        assert_eq!(
            headers["authorization"],
            format!("Bearer {SECRET}").as_str()
        );
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["recipient"], "+491701234567");
        assert_eq!(body["sender"], "Support");
        let text = body["message"]["text"].as_str().expect("text");
        assert!(
            text.starts_with("Ada Lovelace (Example Utilities) invites you"),
            "{text}"
        );
        link_in(text);
    }

    // Refusals, each with its own answer and nothing sent.
    for (to, code, words) in [
        (
            json!({"channel": "email", "to": "refuse@example.org"}),
            "delivery_failed",
            "550",
        ),
        (
            json!({"channel": "sms", "to": "+49 1555 0000500"}),
            "delivery_failed",
            "500",
        ),
        (
            json!({"channel": "email", "to": "not an address"}),
            "invalid_recipient",
            "e-mail",
        ),
        (
            json!({"channel": "sms", "to": "0170 1234567"}),
            "invalid_recipient",
            "international",
        ),
        (
            json!({"channel": "fax", "to": "x"}),
            "bad_request",
            "channel",
        ),
    ] {
        refused(&mut admin, &other, &to, code, words).await;
    }
    assert_eq!(
        smtp.messages().len(),
        1,
        "the refused mail was not delivered"
    );
    let missing = send(
        &mut admin,
        "nope",
        json!({"channel": "email", "to": "a@example.org"}),
    )
    .await;
    assert_eq!(missing.status, 404);

    // The log notes each send and refusal with a pseudonym, never the recipient.
    let entries = app.running().audit_entries().expect("audit");
    let sends: Vec<_> = entries
        .iter()
        .filter(|e| e.detail.contains(" by e-mail to #") || e.detail.contains(" by SMS to #"))
        .collect();
    assert_eq!(sends.len(), 4, "{sends:#?}");
    for entry in &entries {
        for personal in ["kunde@", "refuse@", "1701234567", "15550000500"] {
            assert!(!entry.detail.contains(personal), "{entry:?}");
        }
    }
    // The relay's own words repeat the address; the log keeps only what happened.
    assert!(
        entries.iter().any(|e| e
            .detail
            .ends_with(": the mail relay refused the message (550)")),
        "{entries:#?}"
    );
    let kinds = app.audit_kinds();
    assert_eq!(kinds.iter().filter(|k| *k == "invitation_sent").count(), 2);
    assert_eq!(
        kinds.iter().filter(|k| *k == "invitation_not_sent").count(),
        2
    );
    app.stop().await;

    // TLS from the first byte, on the other port.
    let mut app = TestAppliance::start_with(|c| configure(c, &setup, smtp.tls, "tls")).await;
    let mut admin = app.set_up().await;
    let (session, _, _) = create_session(&mut admin).await;
    let sent = send(
        &mut admin,
        &session,
        json!({"channel": "email", "to": "b@example.org"}),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    let last = smtp.messages().pop().expect("mail");
    assert_eq!(
        (last["tls"].clone(), last["to"].clone()),
        (json!(true), json!(["b@example.org"]))
    );
    assert_eq!(last["subject"], "Video support from Example Utilities");
    app.stop().await;
}

#[tokio::test]
async fn a_relay_that_is_down_or_refuses_the_login_is_a_clear_error() {
    let Some(python) = smtp_python() else {
        eprintln!("skipped: no Python with aiosmtpd (scripts/test-all.sh makes one)");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let test_ca = ca("Relay Test CA");
    let smtp = SmtpServer::start(&python, dir.path(), &test_ca);
    let setup = Setup {
        ca_file: write(dir.path(), "ca.pem", &test_ca.pem),
        password_file: private(dir.path(), "smtp-password", "wrong password"),
        secret_file: private(dir.path(), "sms-secret", SECRET),
        sms_port: closed_port().await,
    };
    let mut app = TestAppliance::start_with(|c| {
        configure(c, &setup, smtp.starttls, "starttls");
        c.sessions.invitation_messages_per_hour = 3;
    })
    .await;
    let mut admin = app.set_up().await;
    let (session, _, _) = create_session(&mut admin).await;
    let email = json!({"channel": "email", "to": "a@example.org"});
    refused(&mut admin, &session, &email, "delivery_failed", "535").await;
    let sms = json!({"channel": "sms", "to": "+491701234567"});
    refused(
        &mut admin,
        &session,
        &sms,
        "delivery_failed",
        "cannot be reached",
    )
    .await;
    drop(smtp);
    refused(
        &mut admin,
        &session,
        &email,
        "delivery_failed",
        "cannot be reached",
    )
    .await;
    // Three tries an hour, delivered or not.
    let fourth = send(
        &mut admin,
        &session,
        json!({"channel": "email", "to": "a@example.org"}),
    )
    .await;
    assert_eq!(
        (fourth.status, fourth.json()["error"].clone()),
        (429, json!("throttled"))
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_relay_or_gateway_nothing_is_offered() {
    let mut app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let created = admin.post_empty("/api/sessions").await;
    assert_eq!(created.json()["send_by"], json!([]));
    let id = created.json()["session"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for channel in ["email", "sms"] {
        let answer = send(
            &mut admin,
            &id,
            json!({"channel": channel, "to": "a@example.org"}),
        )
        .await;
        assert_eq!(
            (answer.status, answer.json()["error"].clone()),
            (409, json!("not_configured"))
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_secret_file_others_can_read_stops_the_start_with_its_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let shared = write(dir.path(), "password", "x");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for (file, words) in [
        (shared, "readable by group or others"),
        (dir.path().join("absent"), "cannot read"),
    ] {
        let mut config = sightline::config::Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        config.http.listen = "127.0.0.1:0".parse().expect("addr");
        config.media.listen = "127.0.0.1:0".parse().expect("addr");
        config.metrics.listen = None;
        config.smtp.host = Some("mail.example.test".into());
        config.smtp.from = Some("support@example.test".into());
        config.smtp.username = Some(USER.into());
        config.smtp.password_file = Some(file);
        let clock = Arc::new(sightline::clock::ManualClock::new(1_700_000_000_000));
        let err = match sightline::appliance::start(config, clock).await {
            Ok(_) => panic!("started with a bad secret file"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("smtp.password_file") && err.contains(words),
            "{err}"
        );
    }
}

/// A loopback port nothing listens on: a gateway that is down.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_sent_link_names_the_appliance_even_when_the_host_header_is_forged() {
    // No public URL: the link is made from the request's Host, so it is checked.
    let relay = closed_port().await;
    let mut app = TestAppliance::start_with(|c| {
        c.smtp.host = Some("127.0.0.1".into());
        c.smtp.port = Some(relay);
        c.smtp.tls = sightline::config::SmtpTls::None;
        c.smtp.from = Some("support@example.test".into());
    })
    .await;
    let mut admin = app.set_up().await;
    let (session, _, _) = create_session(&mut admin).await;
    let path = format!("/api/sessions/{session}/invitations");
    let body =
        serde_json::to_vec(&json!({"channel": "email", "to": "a@example.org"})).expect("json");
    let post = |host: String| {
        let mut client = admin.clone();
        let (path, body) = (path.clone(), body.clone());
        async move {
            let headers = [
                ("host", host.as_str()),
                ("content-type", "application/json"),
                ("x-sightline-csrf", "1"),
            ];
            client.request("POST", &path, &headers, body).await
        }
    };
    let port = app.addr().port();
    for forged in ["evil.example".to_owned(), format!("203.0.113.7:{port}")] {
        let answer = post(forged.clone()).await;
        assert_eq!(answer.status, 403, "{forged}: {}", answer.text());
        assert_eq!(answer.json()["error"], "not_allowed");
        assert!(answer.text().contains("public_url"), "{}", answer.text());
    }
    // The address the request came in on, and a name of the appliance, pass the check
    // and reach the relay (which is down here).
    for ours in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let answer = post(ours.clone()).await;
        assert_eq!(answer.status, 502, "{ours}: {}", answer.text());
        assert_eq!(answer.json()["error"], "delivery_failed");
    }
    app.stop().await;
}
