//! Batched datagram I/O for the relay: up to [`BATCH`] datagrams per system call
//! (recvmmsg/sendmmsg), into and out of buffers allocated once, so forwarding a packet
//! costs no allocation and a fraction of a system call here.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt, sockopt,
};

/// Datagrams per system call. Enough to empty a burst (a video frame to a few
/// technicians) in one call; more mostly adds latency to the first datagram.
pub const BATCH: usize = 32;
/// Larger than any datagram a browser sends (its MTU is 1500; ours is 1200).
const MAX_DATAGRAM: usize = 2048;
/// Socket buffers for bursts: a keyframe to several technicians at once. The kernel caps
/// this at net.core.[rw]mem_max.
const SOCKET_BUFFER: usize = 4 << 20;

/// Asks for large socket buffers; without them a burst overflows the default ~200 KiB.
pub fn enlarge_buffers(socket: &impl AsFd) {
    let _ = setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER);
}

fn to_std(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// Datagrams received by one [`Inbox::receive`].
pub struct Inbox {
    buffers: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    received: [(usize, Option<SocketAddr>); BATCH],
    count: usize,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            buffers: Box::new([[0; MAX_DATAGRAM]; BATCH]),
            received: [(0, None); BATCH],
            count: 0,
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl Inbox {
    /// Takes up to [`BATCH`] datagrams the socket already holds, without waiting.
    /// `WouldBlock` when there were none.
    pub fn receive(&mut self, socket: &impl AsRawFd) -> std::io::Result<usize> {
        self.count = 0;
        let mut slices = self.buffers.each_mut().map(|b| [IoSliceMut::new(b)]);
        let messages = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(std::io::Error::from)?;
        for (slot, message) in self.received.iter_mut().zip(messages) {
            // A datagram longer than the buffer arrives cut short; str0m then rejects it
            // as malformed, like any other junk.
            *slot = (message.bytes, message.address.as_ref().and_then(to_std));
            self.count += 1;
        }
        Ok(self.count)
    }

    /// The datagrams of the last receive, with their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        self.received[..self.count]
            .iter()
            .zip(self.buffers.iter())
            .map(|((len, source), buffer)| (&buffer[..(*len).min(MAX_DATAGRAM)], *source))
    }
}

/// Datagrams waiting to be sent, in one flat buffer that keeps its capacity.
pub struct Outbox {
    bytes: Vec<u8>,
    queued: Vec<(usize, usize, SockaddrStorage)>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Datagrams the kernel refused (full buffer or unreachable), dropped as the network
    /// would drop them.
    pub dropped: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            bytes: Vec::with_capacity(BATCH * 1500),
            queued: Vec::with_capacity(BATCH),
            headers: MultiHeaders::preallocate(BATCH, None),
            dropped: 0,
        }
    }
}

impl Outbox {
    /// Queues a datagram; true when the batch is full and must be flushed.
    pub fn push(&mut self, contents: &[u8], destination: SocketAddr) -> bool {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(contents);
        self.queued
            .push((start, contents.len(), SockaddrStorage::from(destination)));
        self.queued.len() >= BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends everything queued; returns how many datagrams the kernel took.
    pub fn flush(&mut self, socket: &impl AsRawFd) -> usize {
        let mut sent = 0;
        let mut next = 0;
        while next < self.queued.len() {
            let batch = &self.queued[next..(next + BATCH).min(self.queued.len())];
            let slices: [[IoSlice; 1]; BATCH] = std::array::from_fn(|i| {
                let (start, len) = batch.get(i).map_or((0, 0), |(s, l, _)| (*s, *l));
                [IoSlice::new(&self.bytes[start..start + len])]
            });
            let addresses: [Option<SockaddrStorage>; BATCH] =
                std::array::from_fn(|i| batch.get(i).map(|(_, _, a)| *a));
            let result = sendmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                &slices[..batch.len()],
                &addresses[..batch.len()],
                [],
                MsgFlags::MSG_DONTWAIT,
            )
            .map(Iterator::count);
            match result {
                Ok(0) | Err(Errno::EAGAIN) => {
                    // The socket buffer is full: the rest is dropped, as a congested
                    // link would; congestion control on the other side reacts to it.
                    self.dropped += (self.queued.len() - next) as u64;
                    break;
                }
                Ok(n) => {
                    sent += n;
                    next += n;
                }
                Err(_) => {
                    // This destination is unusable (e.g. unreachable); the others are not.
                    self.dropped += 1;
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.queued.clear();
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        a.set_nonblocking(true).expect("nonblocking");
        b.set_nonblocking(true).expect("nonblocking");
        enlarge_buffers(&a);
        enlarge_buffers(&b);
        (a, b)
    }

    fn receive_all(socket: &UdpSocket, inbox: &mut Inbox) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            match inbox.receive(socket) {
                Ok(_) => out.extend(
                    inbox
                        .datagrams()
                        .map(|(b, s)| (b.to_vec(), s.expect("source"))),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !out.is_empty() {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        if inbox.receive(socket).is_err() {
                            break;
                        }
                        out.extend(
                            inbox
                                .datagrams()
                                .map(|(b, s)| (b.to_vec(), s.expect("source"))),
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn batches_cross_their_boundary_in_order_and_whole() {
        let (a, b) = pair();
        let to = b.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        // 2½ batches: a full flush on the boundary, then the rest.
        let mut sent = 0;
        for i in 0..(BATCH * 2 + BATCH / 2) {
            let payload = vec![i as u8; 10 + i];
            if outbox.push(&payload, to) {
                sent += outbox.flush(&a);
                assert!(outbox.is_empty());
            }
        }
        sent += outbox.flush(&a);
        assert_eq!(sent, BATCH * 2 + BATCH / 2);
        let mut inbox = Inbox::default();
        let got = receive_all(&b, &mut inbox);
        assert_eq!(got.len(), BATCH * 2 + BATCH / 2);
        for (i, (bytes, source)) in got.iter().enumerate() {
            assert_eq!(bytes, &vec![i as u8; 10 + i], "datagram {i}");
            assert_eq!(*source, a.local_addr().expect("addr"));
        }
    }

    #[test]
    fn an_unreachable_destination_costs_only_its_own_datagram() {
        let (a, b) = pair();
        let to = b.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        outbox.push(b"one", to);
        // IPv6 destination on an IPv4 socket: the kernel refuses just this one.
        outbox.push(b"bad", "[::1]:9".parse().expect("addr"));
        outbox.push(b"two", to);
        assert_eq!(outbox.flush(&a), 2);
        assert_eq!(outbox.dropped, 1);
        let mut inbox = Inbox::default();
        let got: Vec<Vec<u8>> = receive_all(&b, &mut inbox)
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn an_empty_socket_would_block() {
        let (a, _) = pair();
        let mut inbox = Inbox::default();
        let e = inbox.receive(&a).expect_err("nothing queued");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(inbox.datagrams().count(), 0);
    }
}
