//! Configuration: embedded defaults, then an optional TOML file, then the environment
//! (`SIGHTLINE_SECTION__KEY`, or `..._FILE` naming a file that holds the value), then
//! command-line overrides ([`layers`]). Unknown keys in the file are refused by name so
//! that a typo never silently falls back to a default.

pub mod layers;
mod messaging;

pub use messaging::{SmsConfig, SmtpConfig, SmtpTls, read_secret_file};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("invalid setting {key}: {message}")]
    Value { key: &'static str, message: String },
    #[error("environment variable {var} is invalid: {message}")]
    Env { var: String, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, the appliance CA and the server certificate live.
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub sessions: SessionConfig,
    pub backup: BackupConfig,
    pub retention: RetentionConfig,
    pub metrics: MetricsConfig,
    pub firewall: FirewallConfig,
    pub audit: AuditConfig,
    pub smtp: SmtpConfig,
    pub sms: SmsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The engine's page cache in MiB. The appliance's working set is small; more cache
    /// only holds more of the history in memory.
    pub cache_mib: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            // The store's own default (`store::DEFAULT_CACHE_BYTES`); config stays a leaf.
            cache_mib: 32,
        }
    }
}

impl StoreConfig {
    pub fn cache_bytes(&self) -> usize {
        self.cache_mib << 20
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A syslog collector (SIEM) to receive every security-log entry, RFC 5424 over UDP.
    pub syslog_udp: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Networks allowed to reach ssh (CIDR, IPv4 or IPv6). Empty: ssh is closed.
    pub admin_networks: Vec<IpNetwork>,
    pub ssh_port: u16,
    /// New HTTPS connections per second allowed from one source.
    pub new_connections_per_second: u32,
    /// UDP packets per second allowed from a source that is not a known media peer.
    pub unknown_udp_packets_per_second: u32,
    /// The privileged helper's socket (`sightline firewall helper`); the appliance asks
    /// it to blocklist sources the anomaly rules flag.
    pub helper_socket: Option<PathBuf>,
    /// How long a flagged source stays blocklisted.
    pub block_secs: u32,
    /// Malformed or unsolicited media datagrams from one source in a minute before the
    /// source is flagged.
    pub malformed_datagrams_per_minute: u32,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            admin_networks: Vec::new(),
            ssh_port: 22,
            new_connections_per_second: 50,
            unknown_udp_packets_per_second: 500,
            helper_socket: None,
            block_secs: 900,
            malformed_datagrams_per_minute: 100,
        }
    }
}

/// An IP network in CIDR notation (`198.18.0.0/24`, `2001:db8::/32`; a bare address is
/// its own /32 or /128), as the firewall's allow-lists take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNetwork {
    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl std::str::FromStr for IpNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpNetwork {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Plain-HTTP listener for Prometheus `/metrics` (and `/healthz`); keep it on
    /// loopback or a management network. Absent: no metrics listener.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where scheduled backups are written; none means no scheduled backups.
    pub directory: Option<PathBuf>,
    /// The admin's age public key (`age1…`); backups can be restored only with the
    /// matching identity, which should be kept offline.
    pub recipient: Option<String>,
    pub interval_hours: u64,
    /// Incremental backups between two full ones.
    pub incrementals_per_full: u32,
    /// Full backups kept (each with its incrementals).
    pub keep_full: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            directory: None,
            recipient: None,
            interval_hours: 24,
            incrementals_per_full: 6,
            keep_full: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days between a deletion request and its execution (0 = at once; at most 30).
    pub deletion_delay_days: u64,
    /// Days after a subscription's end date when the account's content is deleted.
    pub after_subscription_days: u64,
    /// Days the security log keeps an entry; older entries are cut, and the chain goes
    /// on verifiably from a checkpoint at the cut.
    pub audit_log_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            deletion_delay_days: 0,
            after_subscription_days: 90,
            audit_log_days: 400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// HTTPS, WebSocket signaling (and later the ICE-TCP fallback) share this one port.
    pub listen: SocketAddr,
    /// Base URL printed on start and used in invitation links, e.g.
    /// `https://support.example.com`. Defaults to the URL the browser used.
    pub public_url: Option<String>,
    /// Extra DNS names or IP addresses for the appliance's server certificate.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub listen: SocketAddr,
    /// The address announced to browsers as the relay's host candidate. Defaults to the
    /// address the browser used to reach the appliance, with the media port.
    pub public_address: Option<IpAddr>,
    /// The TCP port announced for ICE-TCP (media over the HTTPS port when UDP is blocked).
    /// Defaults to the HTTPS listener's port; set it when a router or load balancer
    /// forwards another port to it (443 → 8443).
    pub public_tcp_port: Option<u16>,
    /// How long a participant whose connection was lost (network change, drop) may take
    /// to come back with an ICE restart before the relay drops it and the others are told.
    pub reconnect_grace_secs: u64,
    /// Threads forwarding media, each owning whole rooms; 0: one per processor core.
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// How long an invitation link or PIN stays valid before the customer joins.
    pub invitation_ttl_secs: u64,
    /// The longest a support session may last once started.
    pub max_duration_secs: u64,
    /// How long the first-run setup code stays valid.
    pub setup_code_ttl_secs: u64,
    /// Wrong PINs, setup codes or links from one source within a minute before that
    /// source is refused for a while.
    pub guess_limit_per_minute: u32,
    /// Invitations one technician may send by e-mail and SMS together in an hour.
    pub invitation_messages_per_hour: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("sightline-data"),
            http: HttpConfig::default(),
            media: MediaConfig::default(),
            sessions: SessionConfig::default(),
            backup: BackupConfig::default(),
            retention: RetentionConfig::default(),
            store: StoreConfig::default(),
            metrics: MetricsConfig::default(),
            firewall: FirewallConfig::default(),
            audit: AuditConfig::default(),
            smtp: SmtpConfig::default(),
            sms: SmsConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            public_url: None,
            server_names: Vec::new(),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 15000)),
            public_address: None,
            public_tcp_port: None,
            reconnect_grace_secs: 20,
            workers: 0,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            invitation_ttl_secs: 15 * 60,
            max_duration_secs: 4 * 3600,
            setup_code_ttl_secs: 24 * 3600,
            guess_limit_per_minute: 10,
            invitation_messages_per_hour: 30,
        }
    }
}

impl Config {
    /// A configuration from TOML text alone (no environment, no flags), validated; the
    /// appliance reads its layers through [`layers::Layered`].
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.http.public_url
            && !url.starts_with("https://")
        {
            return Err(ConfigError::Value {
                key: "http.public_url",
                message: format!("{url:?} must start with https://"),
            });
        }
        let s = &self.sessions;
        for (key, value) in [
            ("sessions.invitation_ttl_secs", s.invitation_ttl_secs),
            ("sessions.max_duration_secs", s.max_duration_secs),
            ("sessions.setup_code_ttl_secs", s.setup_code_ttl_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Value {
                    key,
                    message: "must be greater than zero".into(),
                });
            }
        }
        if !(1..=4096).contains(&self.store.cache_mib) {
            return Err(ConfigError::Value {
                key: "store.cache_mib",
                message: format!("{} MiB; choose 1 to 4096", self.store.cache_mib),
            });
        }
        if !(30..=36_500).contains(&self.retention.audit_log_days) {
            return Err(ConfigError::Value {
                key: "retention.audit_log_days",
                message: format!(
                    "{} days; keep the security log 30 to 36500 days",
                    self.retention.audit_log_days
                ),
            });
        }
        if self.retention.deletion_delay_days > 30 {
            return Err(ConfigError::Value {
                key: "retention.deletion_delay_days",
                message: "deletion on request must complete within 30 days".into(),
            });
        }
        if self.backup.directory.is_some() {
            let valid = self
                .backup
                .recipient
                .as_deref()
                .is_some_and(|r| r.trim().parse::<age::x25519::Recipient>().is_ok());
            if !valid {
                return Err(ConfigError::Value {
                    key: "backup.recipient",
                    message: "backups need the admin's age public key (age1…); create one with age-keygen or `sightline keys backup-identity`".into(),
                });
            }
            if self.backup.interval_hours == 0 || self.backup.keep_full == 0 {
                return Err(ConfigError::Value {
                    key: "backup.interval_hours",
                    message: "interval and keep_full must be greater than zero".into(),
                });
            }
        }
        messaging::validate_smtp(&self.smtp)?;
        messaging::validate_sms(&self.sms)?;
        if s.invitation_messages_per_hour == 0 {
            return Err(ConfigError::Value {
                key: "sessions.invitation_messages_per_hour",
                message: "must be greater than zero".into(),
            });
        }
        if s.guess_limit_per_minute == 0 {
            return Err(ConfigError::Value {
                key: "sessions.guess_limit_per_minute",
                message: "must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_embedded_defaults() {
        let config = Config::from_toml("").expect("defaults");
        assert_eq!(config.http.listen.port(), 8443);
        assert_eq!(config.media.listen.port(), 15000);
        assert_eq!(config.data_dir, PathBuf::from("sightline-data"));
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::from_toml("[media]\npublic_adress = \"10.0.0.1\"\n")
            .expect_err("must be refused");
        assert!(err.contains("public_adress"), "{err}");
    }

    #[test]
    fn unknown_section_is_named_in_the_error() {
        let err = Config::from_toml("[medai]\n").expect_err("must be refused");
        assert!(err.contains("medai"), "{err}");
    }

    #[test]
    fn public_url_must_be_https() {
        let err =
            Config::from_toml("[http]\npublic_url = \"http://x\"\n").expect_err("must be refused");
        assert!(err.contains("http.public_url"), "{err}");
    }
}
