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
/// Bytes read from a connection at a time; frames are cut from them by [`Deframer`].
const READ_CHUNK: usize = 16 * 1024;

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
            let mut frames = Deframer::default();
            let mut chunk = vec![0u8; READ_CHUNK];
            'read: loop {
                let n = match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                frames.push(&chunk[..n]);
                loop {
                    match frames.next_frame() {
                        Ok(Some(bytes)) => {
                            let event = TcpEvent::Frame { remote, bytes };
                            if events.send(event).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(EmptyFrame) => break 'read,
                    }
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

/// A zero-length frame: ICE never sends one, so the connection is closed.
#[derive(Debug, PartialEq, Eq)]
pub struct EmptyFrame;

/// Cuts an RFC 4571 byte stream (each frame a 16-bit big-endian length, then that many
/// bytes) into frames, however the reads split it. It holds at most one unfinished frame
/// and the rest of the last read.
#[derive(Default)]
pub struct Deframer {
    pending: Vec<u8>,
    /// Where the next frame's length starts in `pending`.
    at: usize,
}

impl Deframer {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 {
            // Drop what was already handed out before growing the buffer.
            self.pending.drain(..self.at);
            self.at = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` until its bytes have arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, EmptyFrame> {
        let rest = &self.pending[self.at..];
        let [hi, lo, body @ ..] = rest else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if len == 0 {
            return Err(EmptyFrame);
        }
        let Some(frame) = body.get(..len) else {
            return Ok(None);
        };
        let frame = frame.to_vec();
        self.at += 2 + len;
        Ok(Some(frame))
    }
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
    fn frames_are_cut_however_the_reads_split_them() {
        let stream = [
            frame(b"first").expect("short"),
            frame(&[7; 300]).expect("short"),
            frame(b"x").expect("short"),
        ]
        .concat();
        for split in [1, 2, 3, 7, 300, stream.len()] {
            let mut frames = Deframer::default();
            let mut out = Vec::new();
            for chunk in stream.chunks(split) {
                frames.push(chunk);
                while let Some(frame) = frames.next_frame().expect("no empty frame") {
                    out.push(frame);
                }
            }
            assert_eq!(
                out,
                vec![b"first".to_vec(), vec![7; 300], b"x".to_vec()],
                "{split}"
            );
        }
        let mut frames = Deframer::default();
        frames.push(&[0, 1, 9, 0, 0, 0, 1]);
        assert_eq!(frames.next_frame(), Ok(Some(vec![9])));
        assert_eq!(
            frames.next_frame(),
            Err(EmptyFrame),
            "a zero length ends the stream"
        );
    }

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(frame(&[1, 2, 3]), Some(vec![0, 3, 1, 2, 3]));
        assert_eq!(frame(&vec![0; 70_000]), None);
    }
}
