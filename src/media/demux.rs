//! Which worker a datagram is for. Each worker reads its own socket of a `SO_REUSEPORT`
//! group on the media port; the kernel spreads remote addresses over the sockets by a
//! hash, not by room, so a worker hands datagrams of other workers' peers over in
//! [`Batch`]es.
//!
//! A datagram is routed by the ICE username of a STUN request (the first half is the
//! ufrag the relay gave that peer in its answer) and afterwards by the source address
//! such a request came from: a browser sends DTLS and SRTP only on a path it has checked
//! with STUN first. Since one remote address always lands on the same socket, each
//! worker learns only the addresses it sees; ufrags are told to every worker.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use str0m::net::Protocol;

use super::PeerId;

/// Source addresses remembered per peer, least recently checked forgotten first. A browser
/// checks from each of its candidates — one per interface, and a machine with bridges or
/// VPNs has many (with 8 the e2e customer, on a host with the tests' veth interfaces, lost
/// the address it was using) — then keeps checking the one in use. The cap bounds what
/// forged STUN requests can make the table hold.
const SOURCES_PER_PEER: usize = 32;
/// Batches waiting for one worker; beyond that the worker is overloaded and datagrams are
/// dropped, as a full socket buffer would drop them.
pub(super) const HANDOVER_QUEUE: usize = 256;

/// Which peer a datagram belongs to, as far as addresses and ICE usernames tell.
#[derive(Default)]
pub(super) struct Routes {
    by_ufrag: HashMap<Box<str>, PeerId>,
    by_source: HashMap<SocketAddr, PeerId>,
    /// What routes to each peer, so that forgetting one is not a scan.
    of_peer: HashMap<PeerId, PeerRoutes>,
}

#[derive(Default)]
struct PeerRoutes {
    ufrags: Vec<Box<str>>,
    /// Oldest first.
    sources: VecDeque<SocketAddr>,
}

impl Routes {
    /// The peer answered with this ufrag (again, after an ICE restart: the old one stays
    /// valid until the peer is forgotten, since media may still use the old path).
    pub fn add(&mut self, ufrag: &str, peer: PeerId) {
        if self.by_ufrag.get(ufrag) == Some(&peer) {
            return;
        }
        if let Some(old) = self.by_ufrag.insert(ufrag.into(), peer)
            && let Some(routes) = self.of_peer.get_mut(&old)
        {
            routes.ufrags.retain(|u| &**u != ufrag);
        }
        self.of_peer
            .entry(peer)
            .or_default()
            .ufrags
            .push(ufrag.into());
    }

    /// The peer is gone; nothing routes to it any more.
    pub fn forget(&mut self, peer: PeerId) {
        let Some(routes) = self.of_peer.remove(&peer) else {
            return;
        };
        for ufrag in routes.ufrags {
            if self.by_ufrag.get(&ufrag) == Some(&peer) {
                self.by_ufrag.remove(&ufrag);
            }
        }
        for source in routes.sources {
            if self.by_source.get(&source) == Some(&peer) {
                self.by_source.remove(&source);
            }
        }
    }

    /// The peer this datagram is for, learning the source from STUN requests.
    pub fn route(&mut self, datagram: &[u8], source: SocketAddr) -> Option<PeerId> {
        match stun_ufrag(datagram) {
            Stun::Username(ufrag) => {
                let peer = *self.by_ufrag.get(ufrag)?;
                self.learn(source, peer);
                Some(peer)
            }
            Stun::Anonymous | Stun::Not => self.by_source.get(&source).copied(),
        }
    }

    fn learn(&mut self, source: SocketAddr, peer: PeerId) {
        match self.by_source.insert(source, peer) {
            Some(old) if old == peer => {
                // Checked again: the most recently used now.
                if let Some(routes) = self.of_peer.get_mut(&peer)
                    && routes.sources.back() != Some(&source)
                {
                    routes.sources.retain(|s| *s != source);
                    routes.sources.push_back(source);
                }
                return;
            }
            Some(old) => {
                if let Some(routes) = self.of_peer.get_mut(&old) {
                    routes.sources.retain(|s| *s != source);
                }
            }
            None => {}
        }
        let routes = self.of_peer.entry(peer).or_default();
        routes.sources.push_back(source);
        if routes.sources.len() > SOURCES_PER_PEER
            && let Some(oldest) = routes.sources.pop_front()
            && self.by_source.get(&oldest) == Some(&peer)
        {
            self.by_source.remove(&oldest);
        }
    }

    /// What the table holds is consistent and bounded: every learnt source routes to a
    /// peer that lists it, and no peer has more than [`SOURCES_PER_PEER`].
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn check(&self) {
        for (source, peer) in &self.by_source {
            let listed = self
                .of_peer
                .get(peer)
                .is_some_and(|r| r.sources.contains(source));
            assert!(
                listed,
                "{source} routes to {peer:?}, which does not list it"
            );
        }
        for (ufrag, peer) in &self.by_ufrag {
            let listed = self
                .of_peer
                .get(peer)
                .is_some_and(|r| r.ufrags.contains(ufrag));
            assert!(
                listed,
                "ufrag {ufrag} routes to {peer:?}, which does not list it"
            );
        }
        for routes in self.of_peer.values() {
            assert!(routes.sources.len() <= SOURCES_PER_PEER);
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn len(&self) -> (usize, usize, usize) {
        (
            self.by_ufrag.len(),
            self.by_source.len(),
            self.of_peer.len(),
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Stun<'a> {
    /// A STUN message with a USERNAME attribute; this is its first half (the recipient's
    /// ufrag, RFC 8445 §7.2.2).
    Username(&'a str),
    /// STUN without a username (a response or an indication).
    Anonymous,
    /// Not STUN (DTLS, SRTP, SRTCP) or not well-formed.
    Not,
}

/// Reads the recipient's ufrag from a STUN message (RFC 8489: 20-byte header with the
/// magic cookie, then type-length-value attributes padded to four bytes).
fn stun_ufrag(datagram: &[u8]) -> Stun<'_> {
    const USERNAME: u16 = 0x0006;
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    let be16 = |at: usize| u16::from_be_bytes([datagram[at], datagram[at + 1]]);
    if datagram.len() < 20 || datagram[0] & 0xc0 != 0 || datagram[4..8] != COOKIE {
        return Stun::Not;
    }
    let end = (20 + usize::from(be16(2))).min(datagram.len());
    let mut at = 20;
    while at + 4 <= end {
        let kind = be16(at);
        let len = usize::from(be16(at + 2));
        let Some(value) = datagram.get(at + 4..at + 4 + len) else {
            return Stun::Not;
        };
        if kind == USERNAME {
            return match std::str::from_utf8(value) {
                Ok(name) => Stun::Username(name.split(':').next().unwrap_or(name)),
                Err(_) => Stun::Not,
            };
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    Stun::Anonymous
}

/// One datagram in a [`Batch`]: where it came from, the peer the routes point to (the
/// worker checks that it accepts the datagram), and its place in the batch's buffer.
struct Datagram {
    proto: Protocol,
    source: SocketAddr,
    peer: PeerId,
    start: usize,
    len: usize,
}

/// Datagrams for one worker, in one buffer that keeps its capacity: batches travel back
/// to the worker that filled them once read, so handing over allocates nothing per
/// datagram.
pub(super) struct Batch {
    /// The worker that filled it (and gets it back).
    pub origin: usize,
    bytes: Vec<u8>,
    datagrams: Vec<Datagram>,
}

impl Batch {
    pub fn new(origin: usize) -> Self {
        Self {
            origin,
            bytes: Vec::new(),
            datagrams: Vec::new(),
        }
    }

    pub fn push(&mut self, proto: Protocol, source: SocketAddr, peer: PeerId, bytes: &[u8]) {
        self.datagrams.push(Datagram {
            proto,
            source,
            peer,
            start: self.bytes.len(),
            len: bytes.len(),
        });
        self.bytes.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Each datagram: protocol, source, routed peer, bytes.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, SocketAddr, PeerId, &[u8])> {
        self.datagrams.iter().map(|d| {
            (
                d.proto,
                d.source,
                d.peer,
                &self.bytes[d.start..d.start + d.len],
            )
        })
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
    }
}

/// A STUN binding request carrying `username`, as a browser sends it (tests and fuzz seeds).
#[cfg(any(test, feature = "fuzzing"))]
pub fn binding_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    // A PRIORITY attribute first, so the parser has to step over one.
    attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut message = vec![0x00, 0x01];
    message.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    message.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    message.extend_from_slice(&[7; 12]);
    message.extend_from_slice(&attrs);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    /// Routes that know one peer (worker 0's fifth) by `ufrag`.
    fn one_peer(ufrag: &str) -> (Routes, PeerId) {
        let mut routes = Routes::default();
        let peer = PeerId(5 << 8);
        routes.add(ufrag, peer);
        (routes, peer)
    }

    #[test]
    fn the_username_names_the_recipient() {
        assert_eq!(
            stun_ufrag(&binding_request("relayUfrag:browser")),
            Stun::Username("relayUfrag")
        );
        // Odd lengths are padded; the username is still read whole.
        assert_eq!(stun_ufrag(&binding_request("abc:d")), Stun::Username("abc"));
        let mut response = binding_request("x:y");
        response.truncate(28);
        response[2..4].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(stun_ufrag(&response), Stun::Anonymous);
    }

    #[test]
    fn malformed_stun_is_not_trusted() {
        assert_eq!(stun_ufrag(b""), Stun::Not);
        assert_eq!(stun_ufrag(&[0x16; 40]), Stun::Not, "DTLS record");
        assert_eq!(stun_ufrag(&[0x80; 40]), Stun::Not, "RTP");
        // An attribute whose length runs past the end.
        let mut cut = binding_request("relay:browser");
        cut.truncate(32);
        assert_eq!(stun_ufrag(&cut), Stun::Not);
        // A header claiming more than arrived is read only as far as it goes.
        let mut long = binding_request("relay:browser");
        long[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(stun_ufrag(&long), Stun::Username("relay"));
        let mut bad_utf8 = binding_request("ab:c");
        bad_utf8[32] = 0xff;
        assert_eq!(stun_ufrag(&bad_utf8), Stun::Not);
    }

    #[test]
    fn media_follows_the_address_a_stun_request_came_from() {
        let mut routes = Routes::default();
        let (a, b) = (PeerId(1 << 8), PeerId((2 << 8) | 1));
        routes.add("ua", a);
        routes.add("ub", b);
        let srtp = [0x80u8; 100];
        let from_a = addr("198.18.0.1:5000");
        assert_eq!(routes.route(&srtp, from_a), None, "no STUN seen yet");
        assert_eq!(routes.route(&binding_request("ua:x"), from_a), Some(a));
        assert_eq!(routes.route(&srtp, from_a), Some(a));
        assert_eq!(
            routes.route(&binding_request("ub:x"), addr("[::1]:6000")),
            Some(b)
        );
        assert_eq!(routes.route(&srtp, addr("[::1]:6000")), Some(b));
        assert_eq!(routes.route(&binding_request("nobody:x"), from_a), None);
        // The address moves to whoever proves it with a username now.
        assert_eq!(routes.route(&binding_request("ub:x"), from_a), Some(b));
        assert_eq!(routes.route(&srtp, from_a), Some(b));
        routes.check();
        routes.forget(b);
        assert_eq!(routes.route(&srtp, from_a), None);
        assert_eq!(routes.route(&binding_request("ub:x"), from_a), None);
        routes.forget(a);
        assert_eq!(routes.len(), (0, 0, 0), "nothing left behind");
    }

    #[test]
    fn an_ice_restart_keeps_the_old_path_until_the_peer_goes() {
        let (mut routes, peer) = one_peer("before");
        let old_path = addr("198.18.0.1:5000");
        routes.route(&binding_request("before:x"), old_path);
        routes.add("after", peer);
        routes.add("after", peer);
        assert_eq!(routes.route(&[0x80; 40], old_path), Some(peer));
        assert_eq!(
            routes.route(&binding_request("after:y"), addr("198.18.0.2:7000")),
            Some(peer)
        );
        routes.forget(peer);
        assert_eq!(routes.len(), (0, 0, 0));
    }

    #[test]
    fn forged_requests_cannot_grow_the_table_without_bound() {
        let (mut routes, peer) = one_peer("u");
        for port in 1..=1000u16 {
            let source = SocketAddr::from(([198, 18, 0, 1], port));
            assert_eq!(routes.route(&binding_request("u:x"), source), Some(peer));
        }
        assert_eq!(routes.len(), (1, SOURCES_PER_PEER, 1));
        routes.check();
        // The most recent sources still route.
        assert_eq!(
            routes.route(&[0x80; 40], SocketAddr::from(([198, 18, 0, 1], 1000))),
            Some(peer)
        );
        assert_eq!(
            routes.route(&[0x80; 40], SocketAddr::from(([198, 18, 0, 1], 1))),
            None
        );
    }

    #[test]
    fn the_path_in_use_is_kept_while_others_are_checked() {
        let (mut routes, peer) = one_peer("u");
        let in_use = addr("198.18.0.1:4000");
        routes.route(&binding_request("u:x"), in_use);
        // Many other candidates are checked, and the one in use keeps being checked too.
        for port in 1..=(3 * SOURCES_PER_PEER as u16) {
            let other = SocketAddr::from(([198, 18, 0, 2], port));
            routes.route(&binding_request("u:x"), other);
            if port % 8 == 0 {
                routes.route(&binding_request("u:x"), in_use);
            }
        }
        assert_eq!(routes.route(&[0x80; 40], in_use), Some(peer));
    }

    #[test]
    fn batches_keep_datagrams_whole_and_in_order() {
        let mut batch = Batch::new(0);
        let peer = PeerId(3 << 8);
        for i in 0..50u8 {
            batch.push(
                Protocol::Udp,
                addr("127.0.0.1:1"),
                peer,
                &vec![i; usize::from(i) + 1],
            );
        }
        assert_eq!(batch.len(), 50);
        for (i, (_, _, routed, bytes)) in batch.iter().enumerate() {
            assert_eq!(bytes, vec![i as u8; i + 1]);
            assert_eq!(routed, peer);
        }
        let capacity = batch.bytes.capacity();
        batch.clear();
        assert_eq!(batch.len(), 0);
        assert_eq!(batch.bytes.capacity(), capacity, "reused, not reallocated");
    }
}
