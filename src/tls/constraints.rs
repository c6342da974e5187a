//! What a new appliance CA may sign: its name constraints (RFC 5280 §4.2.1.10), and the
//! check of a name against them.

use std::net::IpAddr;

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use serde::{Deserialize, Serialize};

/// The subtrees a CA may issue for: DNS suffixes and IP networks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct Permitted {
    pub(super) dns: Vec<String>,
    pub(super) ip: Vec<(IpAddr, u8)>,
}

/// Address ranges an appliance inside a company network is reached on: loopback, the
/// private and shared ranges, link-local and unique-local IPv6.
const PRIVATE_NETWORKS: [(&str, u8); 9] = [
    ("127.0.0.0", 8),
    ("10.0.0.0", 8),
    ("172.16.0.0", 12),
    ("192.168.0.0", 16),
    ("100.64.0.0", 10),
    ("169.254.0.0", 16),
    ("::1", 128),
    ("fc00::", 7),
    ("fe80::", 10),
];

impl Permitted {
    /// What a new CA is constrained to: `localhost`, the DNS names asked for (for a name
    /// of three or more labels, its parent domain, so that the appliance can be renamed
    /// within the company's domain), the private networks, and any other address asked
    /// for.
    pub(super) fn for_names(names: &[String]) -> Self {
        let mut permitted = Self {
            dns: vec!["localhost".to_owned()],
            ip: PRIVATE_NETWORKS
                .iter()
                .filter_map(|(net, prefix)| Some((net.parse().ok()?, *prefix)))
                .collect(),
        };
        for name in names {
            if let Ok(ip) = name.parse::<IpAddr>() {
                if !permitted.allows(name) {
                    let host = if ip.is_ipv4() { 32 } else { 128 };
                    permitted.ip.push((ip, host));
                }
                continue;
            }
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let labels = name.split('.').count();
            let suffix = match name.split_once('.') {
                Some((_, parent)) if labels >= 3 => parent.to_owned(),
                _ => name,
            };
            if !permitted.allows(&suffix) {
                permitted.dns.push(suffix);
            }
        }
        permitted
    }

    /// Whether a certificate name falls inside these subtrees (RFC 5280 §4.2.1.10).
    pub(super) fn allows(&self, name: &str) -> bool {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return self
                .ip
                .iter()
                .any(|(net, prefix)| in_network(ip, *net, *prefix));
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.dns
            .iter()
            .any(|base| name == *base || name.ends_with(&format!(".{base}")))
    }

    pub(super) fn constraints(&self) -> NameConstraints {
        let dns = self.dns.iter().cloned().map(GeneralSubtree::DnsName);
        let ip = self.ip.iter().map(|(net, prefix)| {
            GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(*net, *prefix))
        });
        NameConstraints {
            permitted_subtrees: dns.chain(ip).collect(),
            excluded_subtrees: Vec::new(),
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_constraints_cover_the_appliance_and_its_domain_only() {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "sightline".to_owned(),
            "support.corp.example".to_owned(),
            "203.0.113.9".to_owned(),
        ];
        let p = Permitted::for_names(&names);
        for ok in [
            "localhost",
            "sightline",
            "support.corp.example",
            "renamed.corp.example",
            "192.168.10.4",
            "10.1.2.3",
            "203.0.113.9",
            "fd00::5",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for refused in [
            "www.bank.example",
            "corp.example.evil",
            "xcorp.example",
            "203.0.113.10",
            "8.8.8.8",
            "2001:db8::1",
        ] {
            assert!(!p.allows(refused), "{refused}");
        }
    }
}
