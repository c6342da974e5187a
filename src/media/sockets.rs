//! The relay's sockets: one per worker, bound as a `SO_REUSEPORT` group on the media port.
//!
//! Neither direction is batched (recvmmsg/sendmmsg): both made the technicians' bandwidth
//! estimates ramp worse in the e2e simulcast test (see the worker's `run` and `socket`).

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
};

/// Socket buffers for bursts: a keyframe to several technicians at once. The kernel caps
/// this at net.core.[rw]mem_max.
const SOCKET_BUFFER: usize = 4 << 20;

/// Asks for large socket buffers; without them a burst overflows the default ~200 KiB
/// (the benchmark's raw loop lost 7–14 % to bursts).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

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
        assert!(UdpSocket::bind(taken).is_err(), "a plain socket on it");
        // Datagrams from one source all reach the same socket of the group.
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for _ in 0..20 {
            sender.send_to(b"x", taken).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut buf = [0u8; 16];
        let counts: Vec<usize> = group
            .iter()
            .map(|s| {
                s.set_nonblocking(true).expect("nonblocking");
                std::iter::from_fn(|| s.recv_from(&mut buf).ok()).count()
            })
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 20);
        assert_eq!(counts.iter().filter(|n| **n > 0).count(), 1, "{counts:?}");
    }
}
