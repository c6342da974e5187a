//! The commands that work on a stopped appliance's data directory: the self-test, backups,
//! keys and account administration.

use std::sync::Arc;

use crate::appliance;
use crate::audit::Audit;
use crate::auth::{Auth, NewUser, Role};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::store::Store;

use super::{
    AccountCommand, AdminCommand, CertCommand, CliRole, KeysCommand, NewAccount, UserCommand,
};

/// The appliance's services over a stopped appliance's data directory.
pub(super) struct Offline {
    store: Store,
    pub(super) audit: Arc<Audit>,
    auth: Arc<Auth>,
    pub(super) lifecycle: crate::lifecycle::Lifecycle,
}

impl Offline {
    pub(super) fn open(config: &Config) -> anyhow::Result<Self> {
        if !Store::exists_in(&config.data_dir) {
            anyhow::bail!(
                "no appliance data in {}; run `sightline serve` once first",
                config.data_dir.display()
            );
        }
        let store = Store::open_data_dir(&config.data_dir, config.store.cache_bytes())?;
        let clock: crate::clock::SharedClock = Arc::new(SystemClock);
        let appliance::Core {
            audit,
            throttle,
            auth,
        } = appliance::Core::open(&store, config, clock.clone())?;
        let live = Arc::new(crate::live::Live::new(
            &store,
            clock.clone(),
            audit.clone(),
            throttle,
            crate::media::MediaHandle::detached(),
            config.sessions.clone(),
        )?);
        let lifecycle = crate::lifecycle::Lifecycle::new(
            store.clone(),
            auth.clone(),
            live,
            audit.clone(),
            clock,
            config.retention.clone(),
            config.backup.clone(),
        );
        Ok(Self {
            store,
            audit,
            auth,
            lifecycle,
        })
    }
}

/// `sightline init`: what the first start and the setup page would do, without either.
/// A secret kept in a file of its own: its first line.
fn read_line(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

pub(super) fn cert(config: &Config, command: CertCommand) -> anyhow::Result<()> {
    use crate::tls::imported::{self, Candidate};
    match command {
        CertCommand::Import {
            cert,
            key,
            pkcs12,
            password_file,
        } => {
            let candidate = match (cert, key, pkcs12) {
                (Some(cert), Some(key), None) => Candidate::from_pem_files(&cert, &key)?,
                (None, None, Some(bundle)) => {
                    let password = password_file.as_deref().map(read_line).transpose()?;
                    Candidate::from_pkcs12(&bundle, password.as_deref().unwrap_or(""))?
                }
                _ => anyhow::bail!("give --cert and --key, or --pkcs12"),
            };
            let names = appliance::certificate_names(config);
            let provider = Arc::new(crate::tls::crypto_provider());
            let (_, info) = candidate.check(&names, time::OffsetDateTime::now_utc(), &provider)?;
            candidate.install(&config.data_dir)?;
            print_certificate(&info);
            if names.is_empty() {
                println!(
                    "note: no http.public_url or http.server_names is configured, so no name was checked"
                );
            }
            println!(
                "imported: a running appliance serves it within seconds (or at once on `systemctl reload sightline`)"
            );
            Ok(())
        }
        CertCommand::Show => {
            let dir = config.data_dir.join("tls");
            let imported_chain = dir.join(imported::CHAIN_FILE);
            let (path, source) = if imported_chain.exists() {
                (imported_chain, "imported")
            } else {
                (dir.join("ca.pem"), "appliance_ca")
            };
            let pem = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            use rustls::pki_types::pem::PemObject;
            let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            let info = imported::describe(&chain, source).ok_or_else(|| {
                anyhow::anyhow!("{} holds no readable certificate", path.display())
            })?;
            if source == "appliance_ca" {
                println!(
                    "served: certificates the appliance CA issues (renewed every 30 days); the CA:"
                );
            } else {
                println!("served: the imported certificate");
            }
            print_certificate(&info);
            Ok(())
        }
        CertCommand::Remove => {
            if imported::remove(&config.data_dir)? {
                println!("removed: the appliance CA's certificate is served again");
            } else {
                println!("no imported certificate; the appliance CA's is served");
            }
            Ok(())
        }
    }
}

fn print_certificate(info: &crate::tls::CertInfo) {
    let days = info
        .not_after_ms
        .saturating_sub(crate::clock::Clock::now_ms(&SystemClock))
        / 86_400_000;
    println!("subject:     {}", info.subject);
    println!("issuer:      {}", info.issuer);
    println!("names:       {}", info.names.join(", "));
    println!("valid from:  {}", crate::clock::rfc3339(info.not_before_ms));
    println!(
        "valid until: {} ({days} days left)",
        crate::clock::rfc3339(info.not_after_ms)
    );
    println!("sha256:      {}", info.sha256);
    println!("chain:       {} certificate(s)", info.chain_length);
}

pub(super) fn init(
    config: &Config,
    new: &NewAccount,
    password_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let password = password_file.map(read_line).transpose()?;
    appliance::create_private_dir(&config.data_dir)?;
    let store = Store::open_data_dir(&config.data_dir, config.store.cache_bytes())?;
    let tls = appliance::prepare_tls(&store, config)?;
    let clock: crate::clock::SharedClock = Arc::new(SystemClock);
    let core = appliance::Core::open(&store, config, clock)?;
    match core.auth.initialise(
        &new.organisation,
        &new.admin_email,
        &new.admin_name,
        password.as_deref(),
    )? {
        None => println!(
            "{} is set up already (an account exists); nothing was changed",
            config.data_dir.display()
        ),
        Some((account, user, temporary)) => {
            println!("data directory: {}", config.data_dir.display());
            println!("account: {} ({})", account.id, account.organisation);
            println!("account admin: {} ({})", user.email, user.id);
            if let Some(password) = temporary {
                println!("temporary password: {password}");
                println!("(the admin must choose a new password at first sign-in)");
            }
            println!(
                "appliance CA (for browsers to trust):\n{}",
                tls.ca_pem.trim_end()
            );
        }
    }
    store.flush_blocking()?;
    Ok(())
}

/// Operator self-test; each line says what was checked. Fails if any check failed.
pub(super) fn check(config: &Config) -> anyhow::Result<()> {
    let mut failed = 0;
    let mut report = |what: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {what}: {detail}"),
        Err(detail) => {
            failed += 1;
            println!("FAIL  {what}: {detail}");
        }
    };
    report("config", Ok("valid".into()));
    let https = config.http.listen;
    report(
        "https port",
        match std::net::TcpListener::bind(https) {
            Ok(_) => Ok(format!("{https} is free")),
            Err(e) => Err(format!("{https}: {e} (in use by a running appliance?)")),
        },
    );
    let media = config.media.listen;
    report(
        "media port",
        match std::net::UdpSocket::bind(media) {
            Ok(_) => Ok(format!("udp {media} is free")),
            Err(e) => Err(format!("udp {media}: {e}")),
        },
    );
    report("certificate", crate::tls::check(&config.data_dir));
    if let Some(result) = crate::tls::imported::check_installed(
        &config.data_dir,
        &appliance::certificate_names(config),
        time::OffsetDateTime::now_utc(),
    ) {
        report("imported certificate", result);
    }
    report(
        "store",
        if Store::exists_in(&config.data_dir) {
            match Store::open_data_dir(&config.data_dir, config.store.cache_bytes()) {
                Ok(_) => Ok("opens with the master key".into()),
                Err(crate::store::StoreError::InUse { .. }) => {
                    Ok("in use by the running appliance".into())
                }
                Err(e) => Err(e.to_string()),
            }
        } else {
            Ok("not created yet; it is created on first start".into())
        },
    );
    report(
        "firewall",
        crate::firewall::check(config)
            .map(|()| {
                if crate::firewall::loaded() {
                    "ruleset valid and table inet sightline loaded".to_owned()
                } else {
                    "ruleset valid; table not loaded (sightline-firewall.service applies it)"
                        .to_owned()
                }
            })
            .map_err(|e| e.to_string()),
    );
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

pub(super) fn backup_now(config: &Config, full: bool) -> anyhow::Result<()> {
    let (Some(directory), Some(recipient)) = (&config.backup.directory, &config.backup.recipient)
    else {
        anyhow::bail!("set backup.directory and backup.recipient in the config file first");
    };
    let offline = Offline::open(config)?;
    let archive = crate::store::backup::run(
        &offline.store,
        &config.data_dir,
        &crate::store::backup::BackupPolicy {
            directory,
            recipient,
            incrementals_per_full: config.backup.incrementals_per_full,
            keep_full: config.backup.keep_full,
        },
        crate::clock::Clock::now_ms(&SystemClock),
        full,
    )?;
    println!("backup written: {}", archive.display());
    Ok(())
}

pub(super) fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate => {
            let offline = Offline::open(config)?;
            let path = config.data_dir.join(crate::store::keys::MASTER_KEY_FILE);
            let new = crate::store::keys::MasterKey::generate();
            let pending = path.with_extension("key.new");
            new.write(&pending)?;
            offline.store.rotate_master(new)?;
            std::fs::rename(&pending, &path)?;
            println!("master key rotated; every account key is now wrapped by the new one");
            Ok(())
        }
        KeysCommand::BackupIdentity { out } => {
            let key = crate::store::keys::MasterKey::generate();
            key.write(&out)?;
            let text = std::fs::read_to_string(&out)?;
            let public = text
                .lines()
                .find_map(|l| l.strip_prefix("# public key: "))
                .unwrap_or_default();
            println!(
                "backup identity written to {} (keep it offline)",
                out.display()
            );
            println!("backup.recipient = \"{public}\"");
            Ok(())
        }
    }
}

pub(super) async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let offline = Offline::open(&config)?;
    let auth = &offline.auth;
    let operator_ip = std::net::IpAddr::from([127, 0, 0, 1]);
    match command {
        AdminCommand::Account {
            command: AccountCommand::Delete { account },
        } => {
            auth.account_record(&account)?;
            offline
                .lifecycle
                .delete_account(&account, "deleted by the operator")
                .await?;
            println!("account {account} deleted; its key is destroyed");
        }
        AdminCommand::Account {
            command: AccountCommand::Create { account: new },
        } => {
            let (account, user, password) =
                auth.create_account(&new.organisation, &new.admin_email, &new.admin_name)?;
            offline.store.flush().await?;
            println!("account {} ({})", account.id, account.organisation);
            println!("admin {} <{}>", user.id, user.email);
            println!("temporary password: {password}");
            println!("(the admin must choose a new password at first sign-in)");
        }
        AdminCommand::User { command } => match command {
            UserCommand::Create {
                account,
                email,
                name,
                role,
            } => {
                let operator = auth.operator_for(&account)?;
                let password = crate::auth::temporary_password();
                let user = auth
                    .create_user(
                        &operator,
                        NewUser {
                            email,
                            display_name: name,
                            role: match role {
                                CliRole::Technician => Role::Technician,
                                CliRole::AccountAdmin => Role::AccountAdmin,
                            },
                            password: password.clone(),
                            group_ids: Vec::new(),
                        },
                        operator_ip,
                    )
                    .await?;
                println!("user {} <{}>", user.id, user.email);
                println!("temporary password: {password}");
            }
            UserCommand::ResetPassword { email } => {
                let user = auth.operator_user(&email)?;
                let operator = auth.operator_for(&user.account_id)?;
                let password = crate::auth::temporary_password();
                auth.reset_password(&operator, &user.user_id, password.clone(), operator_ip)
                    .await?;
                println!("temporary password for {}: {password}", user.email);
            }
            UserCommand::Unlock { email } => {
                let user = auth.operator_user(&email)?;
                let operator = auth.operator_for(&user.account_id)?;
                auth.unlock(&operator, &user.user_id, operator_ip)?;
                offline.store.flush().await?;
                println!("unlocked {}", user.email);
            }
            UserCommand::List => {
                for (account, user) in auth.all_users()? {
                    println!(
                        "{}\t{}\t{}\t{:?}\t{}\t{}\t2fa={}",
                        account.id,
                        account.organisation,
                        user.email,
                        user.role,
                        user.display_name,
                        if user.active { "active" } else { "inactive" },
                        user.two_factor_enabled,
                    );
                }
            }
        },
    }
    Ok(())
}
