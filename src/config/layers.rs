//! The configuration's layers, each over the one before: the embedded defaults, the TOML
//! file, the environment, the command line. Every setting remembers which layer gave it,
//! for `sightline config show`.
//!
//! An environment variable names a key as `SIGHTLINE_<SECTION>__<KEY>` (the section and
//! key in capitals, two underscores between), and `SIGHTLINE_<SECTION>__<KEY>_FILE` names
//! a file that holds the value instead — how secrets reach a service without showing in
//! its environment (systemd's `LoadCredential=`, Kubernetes secrets). A value is read as
//! the setting's type: text as it stands, numbers and `true`/`false` as such, lists as
//! TOML (`["a", "b"]`) or separated by commas.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Config, ConfigError};

const PREFIX: &str = "SIGHTLINE_";
/// Variables of this prefix that are not settings: read by the command line and the log.
const NOT_SETTINGS: [&str; 3] = ["SIGHTLINE_CONFIG", "SIGHTLINE_DATA_DIR", "SIGHTLINE_LOG"];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    /// A `..._FILE` variable and the file it named.
    SecretFile {
        var: String,
        path: PathBuf,
    },
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(var) => write!(f, "${var}"),
            Self::SecretFile { var, path } => write!(f, "${var} ({})", path.display()),
            Self::Flag(flag) => f.write_str(flag),
        }
    }
}

/// The effective configuration, where each set value came from, and what was ignored.
#[derive(Debug)]
pub struct Layered {
    pub config: Config,
    /// By dotted key (`http.listen`); keys not listed have their default.
    pub origins: BTreeMap<String, Origin>,
    /// Variables that name no setting; they are ignored.
    pub warnings: Vec<String>,
}

impl Layered {
    /// Lays the file (if any) and the environment over the defaults. Command-line
    /// overrides come after, through [`Layered::set_by_flag`].
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = Table::try_from(Config::default()).map_err(|e| ConfigError::Value {
            key: "(defaults)",
            message: e.to_string(),
        })?;
        let mut origins = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let invalid = |message: String| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            };
            let from_file: Table =
                toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
            // The file alone must make a configuration: unknown keys are named here.
            Config::deserialize_table(from_file.clone()).map_err(invalid)?;
            for key in leaves(&from_file) {
                origins.insert(key, Origin::File(path.to_owned()));
            }
            merge(&mut table, from_file);
        }
        let mut warnings = Vec::new();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(PREFIX) && !NOT_SETTINGS.contains(&name.as_str()))
            .collect();
        env.sort();
        for (var, raw) in env {
            // A setting whose own name ends in `_file` (`smtp.password_file`) takes the
            // path itself; it is read, and checked, where it is used.
            let names_file_setting = key_of(&var).is_some_and(|k| has_setting(&k));
            let (key, value, origin) = match var.strip_suffix("_FILE") {
                Some(setting) if !names_file_setting => {
                    let path = PathBuf::from(&raw);
                    let text =
                        super::read_secret_file(&path).map_err(|message| ConfigError::Env {
                            var: var.clone(),
                            message,
                        })?;
                    let origin = Origin::SecretFile {
                        var: var.clone(),
                        path,
                    };
                    (key_of(setting), text, origin)
                }
                _ => (key_of(&var), raw, Origin::Env(var.clone())),
            };
            let Some(key) = key.filter(|k| has_setting(k)) else {
                warnings.push(format!("{var} names no setting; it is ignored"));
                continue;
            };
            let value = typed(lookup(&table, &key), &value);
            let mut candidate = table.clone();
            set(&mut candidate, &key, value);
            Config::deserialize_table(candidate.clone()).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            table = candidate;
            origins.insert(key.join("."), origin);
        }
        let config = Config::deserialize_table(table).map_err(|message| ConfigError::Invalid {
            path: file.map_or_else(|| PathBuf::from("(environment)"), Path::to_owned),
            message,
        })?;
        Ok(Self {
            config,
            origins,
            warnings,
        })
    }

    /// Notes a command-line override, made to `config` by the caller.
    pub fn set_by_flag(&mut self, key: &str, flag: &'static str) {
        self.origins.insert(key.to_owned(), Origin::Flag(flag));
    }

    /// The effective configuration as TOML, each value followed by where it came from;
    /// values of secret settings masked.
    pub fn show(&self) -> String {
        let table = Table::try_from(&self.config).unwrap_or_default();
        let mut out = String::new();
        let mut sections = Vec::new();
        for (name, value) in &table {
            match value {
                Value::Table(section) => sections.push((name, section)),
                value => out.push_str(&self.line(name, name, value)),
            }
        }
        for (name, section) in sections {
            out.push_str(&format!("\n[{name}]\n"));
            for (key, value) in section {
                out.push_str(&self.line(&format!("{name}.{key}"), key, value));
            }
        }
        out
    }

    fn line(&self, dotted: &str, key: &str, value: &Value) -> String {
        let origin = self.origins.get(dotted).unwrap_or(&Origin::Default);
        let shown = if is_secret(key) {
            "\"********\"".to_owned()
        } else {
            value.to_string()
        };
        format!("{key} = {shown}  # {origin}\n")
    }
}

impl Config {
    fn deserialize_table(table: Table) -> Result<Self, String> {
        let config: Self = table
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        Ok(config)
    }
}

/// Settings whose values are never shown: passwords, secrets and private keys — but not
/// the paths of the files that hold them (`smtp.password_file`), which help to debug.
fn is_secret(key: &str) -> bool {
    !key.ends_with("_file")
        && ["password", "secret", "private", "token"]
            .iter()
            .any(|word| key.contains(word))
}

/// `SIGHTLINE_HTTP__PUBLIC_URL` → `["http", "public_url"]`.
fn key_of(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix(PREFIX)?;
    let key: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    (key.len() <= 2 && key.iter().all(|part| !part.is_empty())).then_some(key)
}

/// Whether the key is a setting: one the defaults hold, or an optional one, which the
/// configuration accepts on its own.
fn has_setting(key: &[String]) -> bool {
    let mut probe = Table::new();
    set(&mut probe, key, Value::String(String::new()));
    match Config::deserialize_table(probe) {
        Ok(_) => true,
        Err(message) => !message.contains("unknown field"),
    }
}

fn lookup<'a>(table: &'a Table, key: &[String]) -> Option<&'a Value> {
    match key {
        [name] => table.get(name),
        [section, name] => table.get(section)?.as_table()?.get(name),
        _ => None,
    }
}

fn set(table: &mut Table, key: &[String], value: Value) {
    match key {
        [name] => {
            table.insert(name.clone(), value);
        }
        [section, name] => {
            let section = table
                .entry(section.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(section) = section {
                section.insert(name.clone(), value);
            }
        }
        _ => {}
    }
}

/// Reads an environment value as the type the setting has (by its default), or, for an
/// optional setting without one, as TOML's scalars if it is one and text otherwise.
fn typed(default: Option<&Value>, raw: &str) -> Value {
    let scalar = || {
        toml::from_str::<Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    let text = || Value::String(raw.to_owned());
    match default {
        Some(Value::String(_)) => text(),
        Some(Value::Array(_)) => {
            if raw.trim_start().starts_with('[') {
                scalar().unwrap_or_else(text)
            } else {
                Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                )
            }
        }
        _ => match scalar() {
            Some(v @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_))) => v,
            _ => text(),
        },
    }
}

/// Lays `over` onto `base`, section by section.
fn merge(base: &mut Table, over: Table) {
    for (name, value) in over {
        match (base.get_mut(&name), value) {
            (Some(Value::Table(section)), Value::Table(over)) => merge(section, over),
            (_, value) => {
                base.insert(name, value);
            }
        }
    }
}

/// The dotted keys of every value in a table (a section's keys under its name).
fn leaves(table: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in table {
        match value {
            Value::Table(section) => {
                out.extend(section.keys().map(|key| format!("{name}.{key}")));
            }
            _ => out.push(name.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_environment_lies_over_the_file_over_the_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("sightline.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"0.0.0.0:443\"\npublic_url = \"https://file.example\"\n",
        )
        .expect("write");
        let layered = Layered::load(
            Some(&file),
            env(&[
                ("SIGHTLINE_HTTP__PUBLIC_URL", "https://env.example"),
                ("SIGHTLINE_MEDIA__WORKERS", "3"),
                ("SIGHTLINE_FIREWALL__ADMIN_NETWORKS", "10.0.0.0/8, fd00::/8"),
                ("SIGHTLINE_MEDIA__PUBLIC_TCP_PORT", "443"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("load");
        let c = &layered.config;
        assert_eq!(c.http.listen.port(), 443);
        assert_eq!(c.http.public_url.as_deref(), Some("https://env.example"));
        assert_eq!(c.media.workers, 3);
        assert_eq!(c.media.public_tcp_port, Some(443));
        assert_eq!(c.firewall.admin_networks.len(), 2);
        assert_eq!(c.media.listen.port(), 15000, "the default stays");
        assert_eq!(layered.origins["http.listen"], Origin::File(file.clone()));
        assert_eq!(
            layered.origins["http.public_url"],
            Origin::Env("SIGHTLINE_HTTP__PUBLIC_URL".into())
        );
        assert!(!layered.origins.contains_key("media.listen"));
        let shown = layered.show();
        assert!(
            shown.contains("public_url = \"https://env.example\"  # $SIGHTLINE_HTTP__PUBLIC_URL"),
            "{shown}"
        );
        assert!(
            shown.contains("listen = \"0.0.0.0:15000\"  # default"),
            "{shown}"
        );
        assert!(layered.warnings.is_empty(), "{:?}", layered.warnings);
    }

    #[test]
    fn a_value_can_come_from_a_file_named_by_the_environment() {
        let dir = tempfile::tempdir().expect("dir");
        let secret = dir.path().join("recipient");
        let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        std::fs::write(&secret, format!("{recipient}\n")).expect("write");
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(m));
        mode(0o640).expect("chmod");
        let var = "SIGHTLINE_BACKUP__RECIPIENT_FILE";
        let shared = Layered::load(None, env(&[(var, secret.to_str().expect("utf-8"))]))
            .expect_err("a group-readable secret file is refused");
        assert!(
            shared.to_string().contains(var) && shared.to_string().contains("0640"),
            "{shared}"
        );
        mode(0o600).expect("chmod");
        let layered = Layered::load(
            None,
            env(&[
                (
                    "SIGHTLINE_BACKUP__RECIPIENT_FILE",
                    secret.to_str().expect("utf-8"),
                ),
                ("SIGHTLINE_BACKUP__DIRECTORY", "/srv/backup"),
            ]),
        )
        .expect("load");
        assert_eq!(layered.config.backup.recipient.as_deref(), Some(recipient));
        assert!(matches!(
            &layered.origins["backup.recipient"],
            Origin::SecretFile { var, .. } if var == "SIGHTLINE_BACKUP__RECIPIENT_FILE"
        ));
        let missing = Layered::load(
            None,
            env(&[("SIGHTLINE_BACKUP__RECIPIENT_FILE", "/nonexistent")]),
        )
        .expect_err("an unreadable file is an error");
        assert!(
            missing
                .to_string()
                .contains("SIGHTLINE_BACKUP__RECIPIENT_FILE"),
            "{missing}"
        );
    }

    #[test]
    fn a_setting_named_file_takes_the_path() {
        let layered = Layered::load(
            None,
            env(&[
                ("SIGHTLINE_SMTP__HOST", "mail.example.com"),
                ("SIGHTLINE_SMTP__FROM", "support@example.com"),
                ("SIGHTLINE_SMTP__USERNAME", "sightline"),
                ("SIGHTLINE_SMTP__PASSWORD_FILE", "/run/credentials/smtp"),
            ]),
        )
        .expect("load");
        let smtp = &layered.config.smtp;
        assert_eq!(
            smtp.password_file.as_deref(),
            Some(Path::new("/run/credentials/smtp"))
        );
        assert_eq!(
            layered.origins["smtp.password_file"],
            Origin::Env("SIGHTLINE_SMTP__PASSWORD_FILE".into())
        );
    }

    #[test]
    fn unknown_variables_are_named_and_bad_values_refused() {
        let layered = Layered::load(
            None,
            env(&[
                ("SIGHTLINE_HTTP__LISTN", "0.0.0.0:1"),
                ("SIGHTLINE_NOPE", "1"),
                ("SIGHTLINE_A__B__C", "1"),
                ("SIGHTLINE_LOG", "debug"),
                ("SIGHTLINE_CONFIG", "/etc/sightline/sightline.toml"),
            ]),
        )
        .expect("warnings only");
        assert_eq!(layered.warnings.len(), 3, "{:?}", layered.warnings);
        assert!(
            layered
                .warnings
                .iter()
                .any(|w| w.contains("SIGHTLINE_HTTP__LISTN"))
        );
        let err = Layered::load(None, env(&[("SIGHTLINE_MEDIA__WORKERS", "many")]))
            .expect_err("not a number");
        assert!(
            err.to_string().contains("SIGHTLINE_MEDIA__WORKERS"),
            "{err}"
        );
        let err = Layered::load(None, env(&[("SIGHTLINE_HTTP__LISTEN", "localhost")]))
            .expect_err("not an address");
        assert!(err.to_string().contains("SIGHTLINE_HTTP__LISTEN"), "{err}");
    }

    #[test]
    fn secrets_are_masked_in_what_is_shown() {
        assert!(is_secret("password") && is_secret("client_secret"));
        assert!(!is_secret("password_file"), "a path, shown to debug with");
        assert!(!is_secret("listen") && !is_secret("recipient"));
    }
}
