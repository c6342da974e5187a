//! The host firewall: an nftables ruleset (its own `table inet sightline`) rendered from
//! the configuration, validated with `nft -c` and applied atomically with `nft -f`.
//!
//! Inbound traffic is dropped unless it is established/related, on loopback, one of the
//! ICMP/ICMPv6 types a host needs, the HTTPS port (with a per-source limit on new
//! connections), the media port (with a per-source limit for sources that are not known
//! media peers), or ssh from the configured admin networks. Blocklist sets with
//! per-element timeouts drop sources outright.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::config::{Config, IpNetwork};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run nft ({0}); is nftables installed?")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

fn elements(networks: &[IpNetwork], v6: bool) -> Vec<String> {
    networks
        .iter()
        .filter(|n| n.is_v6() == v6)
        .map(ToString::to_string)
        .collect()
}

/// The ruleset for this configuration, as an `nft -f` script that replaces the table in
/// one transaction.
pub fn render(config: &Config) -> String {
    let fw = &config.firewall;
    let https = config.http.listen.port();
    let media = config.media.listen.port();
    let admin_v4 = elements(&fw.admin_networks, false);
    let admin_v6 = elements(&fw.admin_networks, true);
    let set = |name: &str, kind: &str, flags: &str, items: &[String]| {
        let elements = if items.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", items.join(", "))
        };
        format!("  set {name} {{ type {kind}; flags {flags};{elements} }}\n")
    };
    let mut out = String::new();
    out.push_str("#!/usr/sbin/nft -f\n# Rendered by `sightline firewall render`; do not edit, change the config.\n");
    // Declaring then deleting makes the replacement work whether or not the table exists.
    out.push_str("table inet sightline\ndelete table inet sightline\n\ntable inet sightline {\n");
    out.push_str(&set("blocklist_v4", "ipv4_addr", "timeout", &[]));
    out.push_str(&set("blocklist_v6", "ipv6_addr", "timeout", &[]));
    out.push_str(&set("media_peers_v4", "ipv4_addr", "timeout", &[]));
    out.push_str(&set("media_peers_v6", "ipv6_addr", "timeout", &[]));
    out.push_str(&set("admin_v4", "ipv4_addr", "interval", &admin_v4));
    out.push_str(&set("admin_v6", "ipv6_addr", "interval", &admin_v6));
    out.push_str(&format!(
        r#"
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    iif "lo" accept
    ip saddr @blocklist_v4 drop
    ip6 saddr @blocklist_v6 drop
    icmp type {{ echo-request, destination-unreachable, time-exceeded, parameter-problem }} limit rate 50/second accept
    icmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query }} accept
    tcp dport {ssh} ip saddr @admin_v4 accept
    tcp dport {ssh} ip6 saddr @admin_v6 accept
    tcp dport {https} ct state new meter https_new_v4 {{ ip saddr limit rate over {conn}/second burst {burst} packets }} drop
    tcp dport {https} ct state new meter https_new_v6 {{ ip6 saddr limit rate over {conn}/second burst {burst} packets }} drop
    tcp dport {https} accept
    udp dport {media} ip saddr != @media_peers_v4 meter media_unknown_v4 {{ ip saddr limit rate over {udp}/second burst {udp} packets }} drop
    udp dport {media} ip6 saddr != @media_peers_v6 meter media_unknown_v6 {{ ip6 saddr limit rate over {udp}/second burst {udp} packets }} drop
    udp dport {media} accept
  }}
}}
"#,
        ssh = fw.ssh_port,
        conn = fw.new_connections_per_second,
        burst = fw.new_connections_per_second * 2,
        udp = fw.unknown_udp_packets_per_second,
    ));
    out
}

fn nft(args: &[&str], script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new(nft_binary())
        .args(args)
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(FirewallError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(FirewallError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

fn nft_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

/// Validates the ruleset without applying it (`nft -c`).
pub fn check(config: &Config) -> Result<(), FirewallError> {
    nft(&["-c"], &render(config))
}

/// Loads the ruleset atomically (needs CAP_NET_ADMIN).
pub fn apply(config: &Config) -> Result<(), FirewallError> {
    nft(&[], &render(config))
}

/// Whether the table is loaded on this host.
pub fn loaded() -> bool {
    Command::new(nft_binary())
        .args(["list", "table", "inet", "sightline"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `nft` with arguments (no script).
fn nft_args(args: &[&str]) -> Result<(), FirewallError> {
    let output = Command::new(nft_binary())
        .args(args)
        .output()
        .map_err(FirewallError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

/// Puts a source in the blocklist for `secs` seconds (the element times out by itself).
pub fn block(source: std::net::IpAddr, secs: u32) -> Result<(), FirewallError> {
    let set = if source.is_ipv4() {
        "blocklist_v4"
    } else {
        "blocklist_v6"
    };
    let element = format!("{{ {source} timeout {secs}s }}");
    nft_args(&["add", "element", "inet", "sightline", set, &element])
}

/// Marks a source as a live media peer for `secs` seconds, exempting it from the
/// per-source limit on UDP from unknown sources.
pub fn allow_media(source: std::net::IpAddr, secs: u32) -> Result<(), FirewallError> {
    let set = if source.is_ipv4() {
        "media_peers_v4"
    } else {
        "media_peers_v6"
    };
    let element = format!("{{ {source} timeout {secs}s }}");
    nft_args(&["add", "element", "inet", "sightline", set, &element])
}

/// How many sources the blocklist sets hold now.
pub fn blocklist_size() -> Result<usize, FirewallError> {
    let mut total = 0;
    for set in ["blocklist_v4", "blocklist_v6"] {
        let output = Command::new(nft_binary())
            .args(["-j", "list", "set", "inet", "sightline", set])
            .output()
            .map_err(FirewallError::Spawn)?;
        if !output.status.success() {
            return Err(FirewallError::Refused(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| FirewallError::Refused(e.to_string()))?;
        total += json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["set"]["elem"].as_array())
            .map(Vec::len)
            .sum::<usize>();
    }
    Ok(total)
}

pub fn unblock(source: std::net::IpAddr) -> Result<(), FirewallError> {
    let set = if source.is_ipv4() {
        "blocklist_v4"
    } else {
        "blocklist_v6"
    };
    let element = format!("{{ {source} }}");
    nft_args(&["delete", "element", "inet", "sightline", set, &element])
}

/// The privileged side: applies the ruleset, then takes `block IP SECS` and `unblock IP`
/// lines from the appliance on a Unix socket. Only this process needs CAP_NET_ADMIN.
pub fn run_helper(config: &Config, socket: &std::path::Path) -> Result<(), FirewallError> {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    apply(config)?;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(FirewallError::Spawn)?;
    // The appliance runs as the same user; nobody else may ask for blocks.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(FirewallError::Spawn)?;
    println!("firewall helper listening on {}", socket.display());
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let reader = match stream.try_clone() {
            Ok(s) => BufReader::new(s),
            Err(_) => continue,
        };
        for line in reader.lines().map_while(Result::ok) {
            let reply = match parse_request(&line) {
                Ok(HelperRequest::Block(ip, secs)) => block(ip, secs).map(|()| "ok".to_owned()),
                Ok(HelperRequest::Unblock(ip)) => unblock(ip).map(|()| "ok".to_owned()),
                Ok(HelperRequest::AllowMedia(ip, secs)) => {
                    allow_media(ip, secs).map(|()| "ok".to_owned())
                }
                Ok(HelperRequest::Count) => blocklist_size().map(|n| format!("ok {n}")),
                Err(e) => Ok(format!("error {e}")),
            }
            .unwrap_or_else(|e| format!("error {e}"));
            if writeln!(stream, "{reply}").is_err() {
                break;
            }
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum HelperRequest {
    Block(std::net::IpAddr, u32),
    Unblock(std::net::IpAddr),
    AllowMedia(std::net::IpAddr, u32),
    Count,
}

fn parse_secs(text: &str) -> Result<u32, &'static str> {
    text.parse()
        .ok()
        .filter(|s| (1..=86_400).contains(s))
        .ok_or("seconds must be 1 to 86400")
}

fn parse_request(line: &str) -> Result<HelperRequest, &'static str> {
    let mut words = line.split_whitespace();
    let verb = words.next();
    if verb == Some("count") {
        return match words.next() {
            None => Ok(HelperRequest::Count),
            Some(_) => Err("count takes no arguments"),
        };
    }
    let ip = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or("expected an IP address")?;
    match (verb, words.next()) {
        (Some("block"), Some(secs)) => Ok(HelperRequest::Block(ip, parse_secs(secs)?)),
        (Some("allow-media"), Some(secs)) => Ok(HelperRequest::AllowMedia(ip, parse_secs(secs)?)),
        (Some("unblock"), None) => Ok(HelperRequest::Unblock(ip)),
        _ => Err("expected: block IP SECONDS | allow-media IP SECONDS | unblock IP | count"),
    }
}

/// The appliance's side: asks the helper to block a source. Without a helper socket the
/// request is only logged (the alert is in the security log either way).
#[derive(Debug, Clone)]
pub struct BlocklistClient {
    socket: Option<std::path::PathBuf>,
}

impl BlocklistClient {
    pub fn new(socket: Option<std::path::PathBuf>) -> Self {
        Self { socket }
    }

    pub fn is_configured(&self) -> bool {
        self.socket.is_some()
    }

    pub fn block(&self, source: std::net::IpAddr, secs: u32) -> Result<(), String> {
        self.request(&format!("block {source} {secs}")).map(drop)
    }

    /// Exempts a connected media peer from the unknown-source UDP limit for `secs`.
    pub fn allow_media(&self, source: std::net::IpAddr, secs: u32) -> Result<(), String> {
        self.request(&format!("allow-media {source} {secs}"))
            .map(drop)
    }

    pub fn blocklist_size(&self) -> Result<usize, String> {
        self.request("count")?
            .trim()
            .parse()
            .map_err(|_| "unexpected answer from the firewall helper".to_owned())
    }

    /// Sends one request line; returns what follows "ok" in the answer.
    fn request(&self, line: &str) -> Result<String, String> {
        use std::io::{BufRead, BufReader};
        let Some(path) = &self.socket else {
            return Err("no firewall helper configured (firewall.helper_socket)".into());
        };
        let mut stream = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| format!("firewall helper at {}: {e}", path.display()))?;
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        writeln!(stream, "{line}").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        BufReader::new(&stream)
            .read_line(&mut reply)
            .map_err(|e| e.to_string())?;
        match reply.trim().strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => Err(reply.trim().to_owned()),
        }
    }
}

/// A small CIDR type, parsed at the edge so that the ruleset never sees raw text.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_opens_exactly_the_configured_ports() {
        let config = Config::from_toml(
            "[http]\nlisten = \"0.0.0.0:443\"\n[firewall]\nadmin_networks = [\"198.18.0.0/24\", \"2001:db8::/32\"]\n",
        )
        .expect("config");
        let rules = render(&config);
        assert!(rules.contains("policy drop;"));
        assert!(rules.contains("tcp dport 443 accept"));
        assert!(rules.contains("udp dport 15000 accept"));
        assert!(rules.contains("elements = { 198.18.0.0/24 }"));
        assert!(rules.contains("elements = { 2001:db8::/32 }"));
        assert!(rules.contains("tcp dport 22 ip saddr @admin_v4 accept"));
        assert!(rules.contains("set blocklist_v4 { type ipv4_addr; flags timeout; }"));
    }

    #[test]
    fn helper_requests_are_parsed_strictly() {
        let ip: std::net::IpAddr = "198.18.0.7".parse().expect("ip");
        assert_eq!(
            parse_request("block 198.18.0.7 300"),
            Ok(HelperRequest::Block(ip, 300))
        );
        assert_eq!(
            parse_request("unblock 198.18.0.7"),
            Ok(HelperRequest::Unblock(ip))
        );
        assert!(parse_request("block 198.18.0.7 0").is_err());
        assert!(parse_request("block 198.18.0.7; flush ruleset 5").is_err());
        assert!(parse_request("drop table").is_err());
        assert!(parse_request("").is_err());
    }

    #[test]
    fn admin_networks_are_parsed_strictly() {
        assert!("198.18.0.0/33".parse::<IpNetwork>().is_err());
        assert!("not-an-ip".parse::<IpNetwork>().is_err());
        assert_eq!(
            "198.18.0.7".parse::<IpNetwork>().expect("host").to_string(),
            "198.18.0.7/32"
        );
        let err = Config::from_toml("[firewall]\nadmin_networks = [\"10.0.0.0/40\"]\n")
            .expect_err("refused");
        assert!(err.contains("prefix"), "{err}");
    }
}
