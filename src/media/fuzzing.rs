//! Entry points for the fuzz targets (`fuzz/`, built with the `fuzzing` feature only): the
//! relay's own reading of what strangers send before any peer has accepted it — the first
//! bytes on the HTTPS port, RFC 4571 framing, and STUN usernames in the datagram routes.

use std::net::SocketAddr;

use super::PeerId;
use super::demux::Routes;
pub use super::demux::binding_request;
pub use super::tcp::{Deframer, EmptyFrame, FirstBytes, classify};

/// Routes `datagrams` through a worker's routing table that knows one peer per ufrag,
/// checking after each one that the table stays consistent and bounded, and that it is
/// empty once every peer is forgotten. Returns the peer (index into `ufrags`) each
/// datagram was routed to.
pub fn route<'a>(
    ufrags: &[&str],
    datagrams: impl IntoIterator<Item = (&'a [u8], SocketAddr)>,
) -> Vec<Option<usize>> {
    let mut routes = Routes::default();
    let peer = |i: usize| PeerId(i as u64);
    for (i, ufrag) in ufrags.iter().enumerate() {
        routes.add(ufrag, peer(i));
    }
    let mut routed = Vec::new();
    for (datagram, source) in datagrams {
        let to = routes.route(datagram, source).map(|p| p.0 as usize);
        assert!(
            to.is_none_or(|i| i < ufrags.len()),
            "routed to an unknown peer"
        );
        routes.check();
        routed.push(to);
    }
    for i in 0..ufrags.len() {
        routes.forget(peer(i));
    }
    assert_eq!(
        routes.len(),
        (0, 0, 0),
        "forgotten peers leave nothing behind"
    );
    routed
}
