//! The relay's sockets: bound as a group, and read in batches: up to [`BATCH`] datagrams per system call
//! (recvmmsg), into buffers allocated once, so a packet arriving costs no allocation and
//! a fraction of a system call here.
//!
//! Output is not batched: the workers' datagrams leave one per `sendto` as str0m's pacer
//! releases them (see the worker's `socket`).

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrStorage, bind, recvmmsg,
    setsockopt, socket, sockopt,
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

/// Binds `count` sockets to `address` as one `SO_REUSEPORT` group, for one reader per
/// worker. Fails as a plain bind would when anything holds the port already (joining an
/// existing group, e.g. a second appliance's, would otherwise succeed and split traffic).
pub fn bind_group(address: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let probe = std::net::UdpSocket::bind(address)?;
    // With port 0 the probe chose the port the group takes.
    let address = probe.local_addr()?;
    drop(probe);
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    (0..count.max(1))
        .map(|_| {
            let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
            setsockopt(&fd, sockopt::ReusePort, &true)?;
            bind(fd.as_raw_fd(), &SockaddrStorage::from(address))?;
            Ok(std::net::UdpSocket::from(fd))
        })
        .collect()
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
            // A datagram longer than the buffer arrives cut short (no browser sends one);
            // it then fails its integrity check like any damaged datagram.
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
        // 2½ batches: receives end on the boundary, then the rest.
        let count = BATCH * 2 + BATCH / 2;
        for i in 0..count {
            a.send_to(&vec![i as u8; 10 + i], to).expect("send");
        }
        let mut inbox = Inbox::default();
        let got = receive_all(&b, &mut inbox);
        assert_eq!(got.len(), count);
        for (i, (bytes, source)) in got.iter().enumerate() {
            assert_eq!(bytes, &vec![i as u8; 10 + i], "datagram {i}");
            assert_eq!(*source, a.local_addr().expect("addr"));
        }
    }

    #[test]
    fn an_over_long_datagram_is_cut_to_the_buffer() {
        let (a, b) = pair();
        a.send_to(&[7; MAX_DATAGRAM + 100], b.local_addr().expect("addr"))
            .expect("send");
        a.send_to(b"next", b.local_addr().expect("addr"))
            .expect("send");
        let mut inbox = Inbox::default();
        let got: Vec<usize> = receive_all(&b, &mut inbox)
            .iter()
            .map(|(bytes, _)| bytes.len())
            .collect();
        assert_eq!(got, vec![MAX_DATAGRAM, 4]);
    }

    #[test]
    fn a_group_shares_one_port_and_refuses_a_taken_one() {
        let group = bind_group("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        let port = group[0].local_addr().expect("addr").port();
        assert!(
            group
                .iter()
                .all(|s| s.local_addr().expect("addr").port() == port)
        );
        let taken = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            bind_group(taken, 2).is_err(),
            "a second group on the same port"
        );
        assert!(
            std::net::UdpSocket::bind(taken).is_err(),
            "a plain socket on it"
        );
        // Datagrams from one source all reach the same socket of the group.
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for _ in 0..20 {
            sender.send_to(b"x", taken).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut inbox = Inbox::default();
        let counts: Vec<usize> = group
            .iter()
            .map(|s| {
                s.set_nonblocking(true).expect("nonblocking");
                let mut n = 0;
                while let Ok(k) = inbox.receive(s) {
                    n += k;
                }
                n
            })
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 20);
        assert_eq!(counts.iter().filter(|n| **n > 0).count(), 1, "{counts:?}");
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
