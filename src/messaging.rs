//! Sending a customer their invitation link: by e-mail through the company's SMTP relay
//! ([`smtp`]) or by SMS through its gateway's HTTPS webhook ([`webhook`]). The message
//! carries the link alone, never the PIN, so one intercepted message is one way in, not
//! two. Each technician may send a limited number an hour.

mod smtp;
mod text;
mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use text::Language;

use crate::config::Config;

/// How long a relay or gateway may take to accept one message.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "e-mail",
            Self::Sms => "SMS",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{} invitations are not set up on this appliance", .0.name())]
    NotConfigured(Channel),
    #[error("{0}")]
    InvalidRecipient(String),
    #[error("too many invitations sent in the last hour; try again later")]
    Throttled,
    /// The relay or gateway refused or could not be reached: `detail` says which and why,
    /// in the relay's own words, which may repeat the address (Postfix does) — so the
    /// security log gets `summary` alone.
    #[error("{detail}")]
    Delivery { summary: String, detail: String },
}

/// The setup could not be used (a secret file unreadable, a CA file invalid).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SetupError {
    pub key: &'static str,
    pub message: String,
}

/// What an invitation message says.
pub struct Invitation<'a> {
    pub link: &'a str,
    pub technician: &'a str,
    pub organisation: &'a str,
    pub valid_minutes: u64,
    pub language: Language,
}

/// A recipient as the relay or gateway takes it: an e-mail address, or a number in
/// E.164 form (`+4917012345678`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub channel: Channel,
    pub address: String,
}

impl Recipient {
    pub fn parse(channel: Channel, input: &str) -> Result<Self, SendError> {
        let input = input.trim();
        let address = match channel {
            Channel::Email => {
                let valid = input.len() <= 254
                    && input.contains('@')
                    && input.parse::<lettre::Address>().is_ok();
                if !valid {
                    return Err(SendError::InvalidRecipient(format!(
                        "{:?} is not an e-mail address",
                        shorten(input)
                    )));
                }
                input.to_owned()
            }
            Channel::Sms => phone_number(input).ok_or_else(|| {
                SendError::InvalidRecipient(format!(
                    "{:?} is not a phone number; give it in international form, e.g. +49 170 1234567",
                    shorten(input)
                ))
            })?,
        };
        Ok(Self { channel, address })
    }

    /// The address with most of it hidden, for the technician's confirmation.
    pub fn masked(&self) -> String {
        match self.channel {
            Channel::Email => {
                let (local, domain) = self.address.rsplit_once('@').unwrap_or(("", ""));
                let first: String = local.chars().take(1).collect();
                format!("{first}…@{domain}")
            }
            Channel::Sms => {
                let digits = self.address.len();
                let tail = &self.address[digits.saturating_sub(3)..];
                format!("+…{tail}")
            }
        }
    }
}

/// E.164: `+`, a country code that does not start with 0, 8 to 15 digits in all. Spaces,
/// dashes, dots, slashes and brackets are how people write numbers, so they are dropped;
/// `00` is the international prefix written out.
fn phone_number(input: &str) -> Option<String> {
    let compact: String = input
        .chars()
        .filter(|c| !" -./()\u{a0}".contains(*c))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))?;
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

pub struct Messenger {
    mail: Option<smtp::MailRelay>,
    sms: Option<webhook::SmsGateway>,
    per_hour: usize,
    /// When each technician sent their recent messages (monotonic).
    sent: Mutex<HashMap<String, VecDeque<std::time::Instant>>>,
}

impl SendError {
    /// A delivery failure whose detail adds nothing personal to its summary.
    pub(crate) fn delivery(summary: impl Into<String>) -> Self {
        let summary = summary.into();
        Self::Delivery {
            detail: summary.clone(),
            summary,
        }
    }

    /// What the security log may keep of this error: never a recipient.
    pub fn summary(&self) -> String {
        match self {
            Self::Delivery { summary, .. } => summary.clone(),
            Self::InvalidRecipient(_) => "not a usable address or number".into(),
            other => other.to_string(),
        }
    }
}

impl Messenger {
    pub fn new(config: &Config) -> Result<Self, SetupError> {
        let hello = config
            .http
            .public_url
            .as_deref()
            .and_then(|u| u.parse::<axum::http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_owned));
        Ok(Self {
            mail: smtp::MailRelay::new(&config.smtp, hello)?,
            sms: webhook::SmsGateway::new(&config.sms)?,
            per_hour: config.sessions.invitation_messages_per_hour as usize,
            sent: Mutex::new(HashMap::new()),
        })
    }

    /// The channels this appliance can send invitations by.
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        if self.mail.is_some() {
            out.push(Channel::Email);
        }
        if self.sms.is_some() {
            out.push(Channel::Sms);
        }
        out
    }

    pub fn offers(&self, channel: Channel) -> Result<(), SendError> {
        match channel {
            Channel::Email if self.mail.is_some() => Ok(()),
            Channel::Sms if self.sms.is_some() => Ok(()),
            _ => Err(SendError::NotConfigured(channel)),
        }
    }

    /// Counts one message against the technician's hourly allowance, or refuses it.
    pub fn take_allowance(&self, technician: &str) -> Result<(), SendError> {
        let now = std::time::Instant::now();
        let hour = Duration::from_secs(3600);
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < hour);
            !times.is_empty()
        });
        let times = sent.entry(technician.to_owned()).or_default();
        if times.len() >= self.per_hour {
            return Err(SendError::Throttled);
        }
        times.push_back(now);
        Ok(())
    }

    pub async fn send(&self, to: &Recipient, invitation: &Invitation<'_>) -> Result<(), SendError> {
        let sending = async {
            match to.channel {
                Channel::Email => {
                    let mail = self
                        .mail
                        .as_ref()
                        .ok_or(SendError::NotConfigured(Channel::Email))?;
                    let (subject, body) = text::email(invitation);
                    mail.send(&to.address, invitation.language, &subject, body)
                        .await
                }
                Channel::Sms => {
                    let sms = self
                        .sms
                        .as_ref()
                        .ok_or(SendError::NotConfigured(Channel::Sms))?;
                    sms.send(&to.address, &text::sms(invitation)).await
                }
            }
        };
        tokio::time::timeout(DELIVERY_TIMEOUT, sending)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::delivery(format!(
                    "the {} did not answer within {} s",
                    match to.channel {
                        Channel::Email => "mail relay",
                        Channel::Sms => "SMS gateway",
                    },
                    DELIVERY_TIMEOUT.as_secs()
                )))
            })
    }
}

/// Trust anchors for a relay or gateway: the configured CA file, or the system's store.
fn trust_anchors(
    ca_file: Option<&std::path::Path>,
    key: &'static str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, SetupError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| SetupError {
                key,
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| SetupError {
                    key,
                    message: format!("{} is not PEM certificates: {e}", path.display()),
                })?
        }
        None => rustls_native_certs::load_native_certs().certs,
    };
    if certs.is_empty() {
        return Err(SetupError {
            key,
            message: match ca_file {
                Some(path) => format!("{} holds no certificate", path.display()),
                None => "the system has no trusted certificates (install ca-certificates)".into(),
            },
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_read_as_people_write_them() {
        for (input, expected) in [
            ("+49 170 1234567", Some("+491701234567")),
            ("0049 (170) 123-45-67", Some("+491701234567")),
            ("+1 415.555.0100", Some("+14155550100")),
            ("0170 1234567", None),
            ("+49 170 12a4567", None),
            ("+0 1234 5678", None),
            ("+123", None),
            ("+1234567890123456", None),
            ("", None),
        ] {
            assert_eq!(phone_number(input).as_deref(), expected, "{input:?}");
        }
    }

    #[test]
    fn email_addresses_are_checked_and_masked() {
        let ok = Recipient::parse(Channel::Email, " ada@example.com ").expect("valid");
        assert_eq!(ok.address, "ada@example.com");
        assert_eq!(ok.masked(), "a…@example.com");
        for bad in [
            "ada",
            "ada@",
            "a b@example.com",
            "ada@example.com\r\nBcc: x@y.z",
        ] {
            assert!(
                matches!(
                    Recipient::parse(Channel::Email, bad),
                    Err(SendError::InvalidRecipient(_))
                ),
                "{bad:?}"
            );
        }
        let sms = Recipient::parse(Channel::Sms, "+49 170 1234567").expect("valid");
        assert_eq!(sms.masked(), "+…567");
    }

    #[test]
    fn the_hourly_allowance_is_per_technician() {
        let mut config = Config::default();
        config.sessions.invitation_messages_per_hour = 2;
        let messenger = Messenger::new(&config).expect("nothing configured");
        assert!(messenger.channels().is_empty());
        assert!(matches!(
            messenger.offers(Channel::Email),
            Err(SendError::NotConfigured(Channel::Email))
        ));
        messenger.take_allowance("a").expect("first");
        messenger.take_allowance("a").expect("second");
        assert!(matches!(
            messenger.take_allowance("a"),
            Err(SendError::Throttled)
        ));
        messenger
            .take_allowance("b")
            .expect("another technician's own");
    }
}
