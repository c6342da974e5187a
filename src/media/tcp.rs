//! ICE-TCP (RFC 6544): browsers that cannot use UDP reach the relay over the HTTPS port.
//! The HTTPS listener hands over connections whose first bytes are an RFC 4571-framed
//! STUN binding request; here each one gets a reader and a writer task on the relay's
//! runtime, and its frames enter the relay loop like datagrams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Connections the relay keeps at most; more are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection that no peer has accepted a message from within this time is closed.
pub const UNBOUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames waiting to be written to one connection; beyond that they are dropped, as a
/// congested network would.
const WRITE_QUEUE: usize = 512;

pub(super) enum TcpEvent {
    Frame { remote: SocketAddr, bytes: Vec<u8> },
    Closed { remote: SocketAddr },
}

pub(super) struct TcpConn {
    writer: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
    pub opened: Instant,
    /// A peer accepted a message from this connection.
    pub bound: bool,
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        // The writer task ends when its queue's sender is dropped with this.
        self.reader.abort();
    }
}

impl TcpConn {
    /// Starts the connection's tasks; must run inside the relay's runtime.
    pub fn open(
        stream: std::net::TcpStream,
        remote: SocketAddr,
        events: mpsc::Sender<TcpEvent>,
    ) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        let stream = tokio::net::TcpStream::from_std(stream)?;
        stream.set_nodelay(true)?;
        let (mut read, mut write) = stream.into_split();
        let (writer, mut queue) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        tokio::spawn(async move {
            while let Some(frame) = queue.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let reader = tokio::spawn(async move {
            let mut len = [0u8; 2];
            loop {
                if read.read_exact(&mut len).await.is_err() {
                    break;
                }
                let n = usize::from(u16::from_be_bytes(len));
                if n == 0 {
                    break;
                }
                let mut bytes = vec![0u8; n];
                if read.read_exact(&mut bytes).await.is_err() {
                    break;
                }
                if events
                    .send(TcpEvent::Frame { remote, bytes })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = events.send(TcpEvent::Closed { remote }).await;
        });
        Ok(Self {
            writer,
            reader,
            opened: Instant::now(),
            bound: false,
        })
    }

    /// Queues one message, framed with its length (RFC 4571).
    pub fn send(&self, contents: &[u8]) {
        if let Some(frame) = frame(contents) {
            let _ = self.writer.try_send(frame);
        }
    }
}

fn frame(contents: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(contents.len()).ok()?;
    let mut frame = Vec::with_capacity(contents.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(contents);
    Some(frame)
}

/// What the first bytes of a connection to the HTTPS port are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake record: the console, the customer page or the API.
    Tls,
    /// An RFC 4571 frame holding a STUN binding request: ICE over TCP.
    IceTcp,
    /// Not enough bytes yet to tell.
    Undecided,
    /// Neither.
    Other,
}

/// Classifies the bytes a connection has sent so far.
pub fn classify(bytes: &[u8]) -> FirstBytes {
    match bytes {
        [] => FirstBytes::Undecided,
        [0x16, ..] => FirstBytes::Tls,
        [_] | [_, _] | [_, _, _] => FirstBytes::Undecided,
        // Length, then a STUN binding request (type 0x0001) of at least a header's size.
        [hi, lo, 0x00, 0x01, ..] if u16::from_be_bytes([*hi, *lo]) >= 20 => FirstBytes::IceTcp,
        _ => FirstBytes::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_ice_from_junk() {
        assert_eq!(classify(&[]), FirstBytes::Undecided);
        assert_eq!(classify(&[0x16]), FirstBytes::Tls);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02]), FirstBytes::Tls);
        assert_eq!(classify(&[0x00, 0x50]), FirstBytes::Undecided);
        assert_eq!(classify(&[0x00, 0x50, 0x00, 0x01]), FirstBytes::IceTcp);
        assert_eq!(
            classify(&[0x00, 0x04, 0x00, 0x01]),
            FirstBytes::Other,
            "too short for STUN"
        );
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), FirstBytes::Other);
        assert_eq!(
            classify(&[0x00, 0x50, 0x01, 0x01]),
            FirstBytes::Other,
            "a STUN response"
        );
    }

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(frame(&[1, 2, 3]), Some(vec![0, 3, 1, 2, 3]));
        assert_eq!(frame(&vec![0; 70_000]), None);
    }
}
