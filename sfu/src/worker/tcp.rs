//! ICE over TCP (RFC 6544 passive host candidates, RFC 4571 framing) for
//! clients whose UDP is blocked. Each worker listens on its own TCP port
//! next to its UDP socket; a connection's frames go into the worker's core
//! exactly like datagrams (with `Protocol::Tcp`), and what str0m transmits
//! over TCP goes back as frames on the connection to that address.
//!
//! [`FrameDecoder`] and [`encode`] are the sans-IO framing; [`TcpIce`] is the
//! IO: the listener, one reader and one writer task per connection, and the
//! map from remote address to connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Largest frame accepted. WebRTC packets stay under the path MTU; the
/// 16-bit length would allow 64 KiB, which nothing legitimate sends.
pub const MAX_FRAME: usize = 4096;
/// Connections per worker; more are closed at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// A connection that sends nothing for this long is closed (ICE consent
/// checks arrive every few seconds on a live one).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued towards one connection; beyond it they are dropped like
/// datagrams on a full link (the connection is slower than the media).
const SEND_QUEUE: usize = 512;
/// Frames from all connections waiting for the worker.
const EVENT_QUEUE: usize = 4096;

/// Why a byte stream is not RFC 4571 framed WebRTC traffic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes (at most {MAX_FRAME})")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
}

/// Splits a TCP byte stream into RFC 4571 frames (a 16-bit big-endian
/// length, then that many bytes).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = self.buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        let frame = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Ok(Some(frame))
    }
}

/// `payload` with its RFC 4571 length prefix; None when it cannot be framed.
pub fn encode(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok().filter(|l| *l > 0)?;
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// What the connections tell the worker.
#[derive(Debug)]
pub enum TcpEvent {
    Frame(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

/// The worker's TCP side: listener and live connections. The connection
/// map is a `RefCell` because the worker's transmit closure (sending) and
/// its event branches (adding, removing) share it on one thread.
pub struct TcpIce {
    listener: Option<TcpListener>,
    conns: RefCell<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    events_tx: mpsc::Sender<TcpEvent>,
}

impl TcpIce {
    /// `listener` None: ICE-TCP is off and this never yields anything.
    /// Returns the connections' events, which the worker polls.
    pub fn new(listener: Option<TcpListener>) -> (TcpIce, mpsc::Receiver<TcpEvent>) {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let ice = TcpIce {
            listener,
            conns: RefCell::new(HashMap::new()),
            events_tx,
        };
        (ice, events_rx)
    }

    /// Wait for a new connection (forever when ICE-TCP is off).
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        match &self.listener {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    }

    /// Take a new connection: its reader feeds the worker, its writer drains
    /// what the worker sends to `remote`.
    pub fn add(&self, stream: TcpStream, remote: SocketAddr) {
        let mut conns = self.conns.borrow_mut();
        if conns.len() >= MAX_CONNECTIONS {
            tracing::debug!(%remote, "too many ICE-TCP connections; closing");
            return;
        }
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        conns.insert(remote, tx);
        tokio::spawn(read_frames(rd, remote, self.events_tx.clone()));
        tokio::spawn(write_frames(wr, rx));
    }

    pub fn closed(&self, remote: SocketAddr) {
        self.conns.borrow_mut().remove(&remote);
    }

    /// Send `payload` as one frame to `remote`; false when there is no such
    /// connection or its queue is full.
    pub fn send(&self, remote: SocketAddr, payload: &[u8]) -> bool {
        match (self.conns.borrow().get(&remote), encode(payload)) {
            (Some(tx), Some(frame)) => tx.try_send(frame).is_ok(),
            _ => false,
        }
    }

    pub fn connections(&self) -> usize {
        self.conns.borrow().len()
    }
}

async fn read_frames(mut rd: OwnedReadHalf, remote: SocketAddr, events: mpsc::Sender<TcpEvent>) {
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 8192];
    'read: loop {
        let n = match tokio::time::timeout(IDLE_TIMEOUT, rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break, // closed, failed or idle
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if events.send(TcpEvent::Frame(remote, frame)).await.is_err() {
                        return; // the worker is gone
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "not RFC 4571 framing; closing");
                    break 'read;
                }
            }
        }
    }
    let _ = events.send(TcpEvent::Closed(remote)).await;
}

async fn write_frames(mut wr: OwnedWriteHalf, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        if wr.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_across_and_within_reads() {
        let mut d = FrameDecoder::default();
        let a = encode(b"hello").expect("frame");
        let b = encode(&[7u8; 300]).expect("frame");
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        // Byte by byte: nothing until a frame is complete.
        let mut got = vec![];
        for byte in &stream {
            d.push(std::slice::from_ref(byte));
            while let Some(f) = d.next_frame().expect("valid") {
                got.push(f);
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![7u8; 300]]);
        // Two frames in one read.
        d.push(&stream);
        assert_eq!(d.next_frame(), Ok(Some(b"hello".to_vec())));
        assert_eq!(d.next_frame(), Ok(Some(vec![7u8; 300])));
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn oversized_or_empty_frames_are_refused() {
        let mut d = FrameDecoder::default();
        d.push(&[0xff, 0xff, 1, 2, 3]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(65535)));
        let mut d = FrameDecoder::default();
        d.push(&[0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        assert_eq!(encode(&[]), None);
        assert_eq!(encode(&vec![0u8; 70_000]), None);
    }

    #[tokio::test]
    async fn a_connection_carries_frames_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (ice, mut events) = TcpIce::new(Some(listener));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (stream, remote) = ice.accept().await.expect("accept");
        ice.add(stream, remote);
        client
            .write_all(&encode(b"stun?").expect("frame"))
            .await
            .expect("write");
        match events.recv().await {
            Some(TcpEvent::Frame(from, f)) => {
                assert_eq!(from, remote);
                assert_eq!(f, b"stun?");
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        assert!(ice.send(remote, b"stun!"));
        let mut back = [0u8; 7];
        client.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"\x00\x05stun!");
        drop(client);
        assert!(matches!(events.recv().await, Some(TcpEvent::Closed(r)) if r == remote));
        ice.closed(remote);
        assert_eq!(ice.connections(), 0);
        assert!(!ice.send(remote, b"late"));
    }
}
