//! The bytes a stranger sends the media ports before any peer accepted them: the first
//! bytes on the HTTPS port (TLS, ICE-TCP or neither), RFC 4571 framing however the reads
//! split it, and the STUN usernames and source addresses the datagram routes learn.
//! The first byte says how to split the stream into reads.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use sightline::media::fuzzing::{Deframer, EmptyFrame, classify, route};

/// The ufrags the routes know: a browser's STUN request carries `<ufrag>:<its own>`.
const UFRAGS: [&str; 3] = ["relayA1b2", "relayC3d4", "x"];

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    classify(stream);
    // The frames as one whole read gives them, then however reads of `split` bytes do.
    let whole = frames(stream, stream.len().max(1));
    let split = usize::from(split).max(1);
    assert_eq!(
        frames(stream, split),
        whole,
        "framing depends on how reads split the stream"
    );
    // Each frame (as a datagram would be) from one of a few sources.
    let datagrams = whole.0.iter().enumerate().map(|(i, frame)| {
        let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, (i % 40) as u8)), 5000);
        (frame.as_slice(), source)
    });
    route(&UFRAGS, datagrams);
});

/// The frames cut from `stream` read `chunk` bytes at a time, and whether it ended on an
/// empty frame.
fn frames(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut deframer = Deframer::default();
    let mut out = Vec::new();
    for read in stream.chunks(chunk) {
        deframer.push(read);
        loop {
            match deframer.next_frame() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(EmptyFrame) => return (out, true),
            }
        }
    }
    (out, false)
}
