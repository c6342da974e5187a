//! The settings for sending invitations: the company's SMTP relay and its SMS gateway's
//! HTTPS webhook. Both are off until configured.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the relay must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No TLS: only for a relay on the appliance itself (a local Postfix).
    None,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The mail relay's name or address; absent: no e-mail invitations.
    pub host: Option<String>,
    /// Defaults to 587 (STARTTLS), 465 (TLS) or 25 (none).
    pub port: Option<u16>,
    pub tls: SmtpTls,
    /// The sender, e.g. `IT Support <support@example.com>`.
    pub from: Option<String>,
    /// For SMTP AUTH; the password is read from `password_file`.
    pub username: Option<String>,
    /// A file readable only by the appliance (mode 0600 or 0400; systemd's
    /// `LoadCredential=`).
    pub password_file: Option<PathBuf>,
    /// PEM certificates to verify the relay against instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// The gateway's HTTPS endpoint; absent: no SMS invitations.
    pub url: Option<String>,
    /// `POST` or `PUT`.
    pub method: String,
    /// Sent with every request; `{secret}` in a value is replaced by the secret.
    pub headers: BTreeMap<String, String>,
    /// A file readable only by the appliance holding the gateway's secret (an API key).
    pub secret_file: Option<PathBuf>,
    /// The JSON body; in its strings `{number}` becomes the number (E.164, `+49…`),
    /// `{text}` the message and `{secret}` the secret.
    pub body: String,
    /// PEM certificates to verify the gateway against instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            url: None,
            method: "POST".into(),
            headers: BTreeMap::new(),
            secret_file: None,
            body: r#"{"to": "{number}", "text": "{text}"}"#.into(),
            ca_file: None,
        }
    }
}

pub(super) fn validate_smtp(smtp: &SmtpConfig) -> Result<(), ConfigError> {
    let Some(host) = &smtp.host else {
        return Ok(());
    };
    let value = |key, message: &str| ConfigError::Value {
        key,
        message: message.to_owned(),
    };
    if host.trim().is_empty() {
        return Err(value("smtp.host", "must name the relay"));
    }
    if smtp.from.as_deref().is_none_or(|f| f.trim().is_empty()) {
        return Err(value(
            "smtp.from",
            "e-mail needs a sender, e.g. \"IT Support <support@example.com>\"",
        ));
    }
    if smtp.username.is_some() != smtp.password_file.is_some() {
        return Err(value(
            "smtp.password_file",
            "SMTP AUTH needs both username and password_file",
        ));
    }
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if smtp.tls == SmtpTls::None && !local {
        return Err(value(
            "smtp.tls",
            "\"none\" is only for a relay on this machine (localhost); use \"starttls\" or \"tls\"",
        ));
    }
    Ok(())
}

pub(super) fn validate_sms(sms: &SmsConfig) -> Result<(), ConfigError> {
    let Some(url) = &sms.url else {
        return Ok(());
    };
    let value = |key, message: String| ConfigError::Value { key, message };
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| value("sms.url", format!("{url:?} is not a URL")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(value("sms.url", format!("{url:?} must be an https:// URL")));
    }
    if !["POST", "PUT"].contains(&sms.method.as_str()) {
        return Err(value(
            "sms.method",
            format!("{:?}; choose POST or PUT", sms.method),
        ));
    }
    for (name, header) in &sms.headers {
        let valid = axum::http::HeaderName::try_from(name.as_str()).is_ok()
            && axum::http::HeaderValue::try_from(header.as_str()).is_ok();
        if !valid {
            return Err(value(
                "sms.headers",
                format!("{name:?} is not a valid header"),
            ));
        }
    }
    let needs_secret =
        sms.body.contains("{secret}") || sms.headers.values().any(|h| h.contains("{secret}"));
    if needs_secret && sms.secret_file.is_none() {
        return Err(value(
            "sms.secret_file",
            "the headers or body use {secret}; name the file that holds it".into(),
        ));
    }
    let template: serde_json::Value =
        serde_json::from_str(&sms.body).map_err(|e| value("sms.body", format!("not JSON: {e}")))?;
    for placeholder in ["{number}", "{text}"] {
        if !template.to_string().contains(placeholder) {
            return Err(value(
                "sms.body",
                format!("the template must contain {placeholder} in a string"),
            ));
        }
    }
    Ok(())
}

/// Reads a secret from a file the appliance alone may read: one that others can read is
/// refused, since its secret is no longer the appliance's.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    private_enough(path, &meta, credentials.as_deref())?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

/// No permission for others, and none for the group — except in the directory systemd
/// passes credentials in: it writes them 0400 and grants the service's user read access
/// by an ACL, whose mask `stat` shows in the group bits (0440) although no group may read.
fn private_enough(
    path: &std::path::Path,
    meta: &std::fs::Metadata,
    credentials: Option<&std::path::Path>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    let from_systemd = credentials
        .and_then(canonical)
        .zip(canonical(path))
        .is_some_and(|(dir, file)| file.starts_with(dir));
    let allowed = if from_systemd { 0o740 } else { 0o700 };
    if mode & !allowed != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {mode:04o}); make it 0600 or 0400 \
             (or pass it with systemd's LoadCredential=)",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn smtp_needs_a_sender_and_tls_off_the_machine() {
        let err = Config::from_toml("[smtp]\nhost = \"mail.example.com\"\n").expect_err("no from");
        assert!(err.contains("smtp.from"), "{err}");
        let err = Config::from_toml(
            "[smtp]\nhost = \"mail.example.com\"\nfrom = \"a@example.com\"\ntls = \"none\"\n",
        )
        .expect_err("plain to a remote relay");
        assert!(err.contains("smtp.tls"), "{err}");
        let ok = Config::from_toml(
            "[smtp]\nhost = \"127.0.0.1\"\nfrom = \"a@example.com\"\ntls = \"none\"\n",
        )
        .expect("local relay");
        assert_eq!(ok.smtp.port(), 25);
        let err = Config::from_toml(
            "[smtp]\nhost = \"m.example.com\"\nfrom = \"a@example.com\"\nusername = \"u\"\n",
        )
        .expect_err("user without password");
        assert!(err.contains("password_file"), "{err}");
    }

    #[test]
    fn sms_template_is_checked() {
        let base = "[sms]\nurl = \"https://sms.example.com/send\"\n";
        Config::from_toml(base).expect("the default body");
        for (extra, key) in [
            ("body = '{\"to\": \"{number}\"'\n", "sms.body"),
            ("body = '{\"to\": \"{number}\"}'\n", "sms.body"),
            ("method = \"GET\"\n", "sms.method"),
            (
                "headers = { Authorization = \"Bearer {secret}\" }\n",
                "sms.secret_file",
            ),
        ] {
            let err = Config::from_toml(&format!("{base}{extra}")).expect_err(extra);
            assert!(err.contains(key), "{extra}: {err}");
        }
        let err =
            Config::from_toml("[sms]\nurl = \"http://sms.example.com/\"\n").expect_err("http");
        assert!(err.contains("https"), "{err}");
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "hunter2\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_secret_file(&path).expect_err("group-readable");
        assert!(err.contains("0640") && err.contains("0600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(read_secret_file(&path).expect("private"), "hunter2");
        let err = read_secret_file(&dir.path().join("missing")).expect_err("missing");
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn a_systemd_credential_may_show_its_acl_mask_in_the_group_bits() {
        use std::os::unix::fs::PermissionsExt;
        let credentials = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        for dir in [credentials.path(), elsewhere.path()] {
            let path = dir.join("smtp-password");
            std::fs::write(&path, "x").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).expect("chmod");
        }
        let check = |dir: &std::path::Path| {
            let path = dir.join("smtp-password");
            let meta = std::fs::metadata(&path).expect("meta");
            private_enough(&path, &meta, Some(credentials.path()))
        };
        check(credentials.path()).expect("as systemd writes it");
        check(elsewhere.path()).expect_err("a 0440 file elsewhere");
        let path = credentials.path().join("smtp-password");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        let meta = std::fs::metadata(&path).expect("meta");
        private_enough(&path, &meta, Some(credentials.path())).expect_err("others never");
    }
}
