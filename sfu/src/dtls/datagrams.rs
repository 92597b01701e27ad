//! The in-memory datagram pipe OpenSSL reads and writes through.
//!
//! OpenSSL's `SslStream` needs a `Read + Write` transport. str0m is sans-IO,
//! so ours is two queues: datagrams str0m handed us wait in `incoming` until
//! OpenSSL reads them, one datagram per read (DTLS needs datagram
//! boundaries); every write OpenSSL makes is one datagram in `outgoing`,
//! which the instance hands back to str0m from `poll_output`. A read with
//! nothing queued is `WouldBlock`, which OpenSSL reports as `WANT_READ`.

use std::collections::VecDeque;
use std::io;

/// Datagrams queued each way between str0m and OpenSSL.
#[derive(Debug, Default)]
pub(super) struct Datagrams {
    /// Received from the network, not yet read by OpenSSL.
    pub incoming: VecDeque<Vec<u8>>,
    /// Written by OpenSSL, not yet polled by str0m.
    pub outgoing: VecDeque<Vec<u8>>,
}

impl io::Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // A datagram longer than the read truncates, as a UDP socket does
        // (OpenSSL reads DTLS with a buffer larger than any record).
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl io::Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn one_datagram_per_read_and_write() {
        let mut d = Datagrams::default();
        let mut buf = [0u8; 8];
        let err = d.read(&mut buf).expect_err("empty");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        d.incoming.push_back(vec![1, 2, 3]);
        d.incoming.push_back(vec![4]);
        assert_eq!(d.read(&mut buf).ok(), Some(3));
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(d.read(&mut buf).ok(), Some(1));
        assert_eq!(d.write(&[9, 9]).ok(), Some(2));
        assert_eq!(d.write(&[7]).ok(), Some(1));
        assert_eq!(d.outgoing, VecDeque::from(vec![vec![9, 9], vec![7]]));
    }
}
