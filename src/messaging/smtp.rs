//! The company's SMTP relay, through lettre: STARTTLS (required when chosen, never
//! silently skipped) or TLS from the first byte, the relay's certificate checked against
//! the configured CA or the system's store, and AUTH when a username is set.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Language, SendError, SetupError};
use crate::config::{SmtpConfig, SmtpTls};

pub(super) struct MailRelay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl MailRelay {
    /// The relay as configured, or none when no host is set. `hello` is the name the
    /// appliance greets the relay with (its public name, else the sender's domain).
    pub(super) fn new(
        config: &SmtpConfig,
        hello: Option<String>,
    ) -> Result<Option<Self>, SetupError> {
        let Some(host) = config.host.as_deref() else {
            return Ok(None);
        };
        let setup = |key, message: String| SetupError { key, message };
        let from: Mailbox = config
            .from
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| setup("smtp.from", format!("not a sender address: {e}")))?;
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(host.to_owned())
                    .certificate_store(CertificateStore::None);
                for der in super::trust_anchors(config.ca_file.as_deref(), "smtp.ca_file")? {
                    let cert = Certificate::from_der(der.to_vec())
                        .map_err(|e| setup("smtp.ca_file", e.to_string()))?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| setup("smtp.ca_file", e.to_string()))?;
                if mode == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let hello = hello.unwrap_or_else(|| from.email.domain().to_owned());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(config.port())
            .tls(tls)
            .hello_name(ClientId::Domain(hello))
            .timeout(Some(Duration::from_secs(10)));
        if let (Some(user), Some(path)) = (&config.username, &config.password_file) {
            let password = crate::config::read_secret_file(path)
                .map_err(|message| setup("smtp.password_file", message))?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Some(Self {
            transport: builder.build(),
            from,
        }))
    }

    pub(super) async fn send(
        &self,
        to: &str,
        language: Language,
        subject: &str,
        body: String,
    ) -> Result<(), SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| SendError::InvalidRecipient("not an e-mail address".into()))?;
        let message_id = format!("<{}@{}>", crate::ids::random_id(), self.from.email.domain());
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id))
            .header(ContentType::TEXT_PLAIN)
            .header(ContentLanguage(language.tag()))
            .body(body)
            .map_err(|e| SendError::delivery(format!("the message could not be built: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the mail relay did not take an invitation");
                Err(describe(&e))
            }
        }
    }
}

/// The relay's refusal or the connection's failure, as the technician can act on it; the
/// summary without the relay's words.
fn describe(e: &lettre::transport::smtp::Error) -> SendError {
    let summary = if let Some(code) = e.status() {
        // 530, 534, 535: RFC 4954's answers to a refused sign-in.
        if matches!(code.to_string().as_str(), "530" | "534" | "535") {
            format!(
                "the mail relay refused the sign-in ({code}); check smtp.username and smtp.password_file"
            )
        } else if e.is_permanent() {
            format!("the mail relay refused the message ({code})")
        } else {
            format!("the mail relay could not take the message now ({code})")
        }
    } else if e.is_tls() {
        "no trusted TLS connection to the mail relay".to_owned()
    } else {
        "the mail relay cannot be reached".to_owned()
    };
    SendError::Delivery {
        detail: format!("{summary}: {e}"),
        summary,
    }
}

/// `Content-Language`, so a mail client can pick a spell checker and a reader a voice.
#[derive(Clone)]
struct ContentLanguage(&'static str);

impl lettre::message::header::Header for ContentLanguage {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        match s {
            "en" => Ok(Self("en")),
            "de" => Ok(Self("de")),
            _ => Err("unknown language".into()),
        }
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.to_owned())
    }
}
