//! The UDP datagrams one worker wake-up produces, batched. The core's
//! transmits for the worker's socket are queued while it runs and sent when
//! the wake-up ends, in as few system calls as the kernel allows:
//! consecutive datagrams to one destination whose sizes allow it leave as
//! one UDP generic segmentation offload (GSO) send, the kernel cutting one
//! buffer into the datagrams; the rest leave many destinations per call
//! (`sendmmsg`).
//!
//! Owns the queue and the one reused buffer GSO runs are gathered into.
//! What a send call is comes from outside ([`Outbox::flush`] takes it), so
//! the grouping is plain code, unit-tested without a socket.

use std::net::SocketAddr;

/// Largest buffer one GSO call carries (UDP's 64 KiB length limit, less
/// headroom for the headers the kernel adds to each segment).
const MAX_GSO_BYTES: usize = 60_000;

/// One queued datagram: its destination and bytes.
pub type Datagram = (SocketAddr, Vec<u8>);

/// One send call.
#[derive(Debug)]
pub enum SendBatch<'a> {
    /// `datagrams` datagrams of `segment` bytes each (the last may be
    /// shorter), gathered into `contents`, all to `destination`.
    Segmented {
        destination: SocketAddr,
        contents: &'a [u8],
        segment: usize,
        datagrams: usize,
    },
    /// Datagrams each sent on its own, in one call.
    Each(&'a [Datagram]),
}

impl SendBatch<'_> {
    #[cfg(test)]
    pub fn datagrams(&self) -> usize {
        match self {
            SendBatch::Segmented { datagrams, .. } => *datagrams,
            SendBatch::Each(d) => d.len(),
        }
    }

    /// The bytes of the first `sent` datagrams (a GSO send leaves whole or
    /// not at all).
    fn bytes_of(&self, sent: usize) -> u64 {
        match self {
            SendBatch::Segmented {
                contents,
                datagrams,
                ..
            } if sent == *datagrams => contents.len() as u64,
            SendBatch::Segmented { .. } => 0,
            SendBatch::Each(d) => d.iter().take(sent).map(|(_, c)| c.len() as u64).sum(),
        }
    }
}

/// What one flush sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub datagrams: u64,
    pub bytes: u64,
    /// Send calls made (successful or not).
    pub calls: u64,
}

/// How a flush may batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Datagrams per GSO send (1: no GSO).
    pub segments: usize,
    /// Datagrams per `sendmmsg` call (1: one call each).
    pub messages: usize,
}

/// Datagrams waiting for the end of the wake-up, in the order the core
/// produced them.
#[derive(Default)]
pub struct Outbox {
    queue: Vec<Datagram>,
    gathered: Vec<u8>,
}

impl Outbox {
    pub fn push(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        self.queue.push((destination, contents));
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Send everything queued, in order. `send` makes one call and returns
    /// how many of its datagrams left (fewer when the socket buffer is full:
    /// the rest are lost, as on the wire, and NACK/RTX repairs them).
    pub fn flush(
        &mut self,
        limits: BatchLimits,
        mut send: impl FnMut(&SendBatch<'_>) -> usize,
    ) -> Flushed {
        let mut flushed = Flushed::default();
        let mut call = |batch: SendBatch<'_>| {
            let sent = send(&batch);
            flushed.calls += 1;
            flushed.datagrams += sent as u64;
            flushed.bytes += batch.bytes_of(sent);
        };
        let (queue, gathered) = (&self.queue, &mut self.gathered);
        let mut start = 0;
        while start < queue.len() {
            let n = run_length(&queue[start..], limits.segments);
            if n > 1 {
                let run = &queue[start..start + n];
                gathered.clear();
                for (_, c) in run {
                    gathered.extend_from_slice(c);
                }
                call(SendBatch::Segmented {
                    destination: run[0].0,
                    contents: gathered,
                    segment: run[0].1.len(),
                    datagrams: n,
                });
                start += n;
                continue;
            }
            // Single datagrams up to the next GSO run, `messages` per call.
            let mut end = start + 1;
            while end < queue.len()
                && end - start < limits.messages.max(1)
                && run_length(&queue[end..], limits.segments) == 1
            {
                end += 1;
            }
            call(SendBatch::Each(&queue[start..end]));
            start = end;
        }
        self.queue.clear();
        flushed
    }
}

/// How many datagrams from the start of `queue` one GSO call can carry:
/// same destination, every one the size of the first except a shorter
/// last one, within the segment and byte limits.
fn run_length(queue: &[Datagram], max_segments: usize) -> usize {
    let Some((destination, first)) = queue.first() else {
        return 0;
    };
    let segment = first.len();
    if segment == 0 {
        return 1;
    }
    let mut bytes = segment;
    let mut n = 1;
    while n < max_segments.min(queue.len()) {
        let (d, c) = &queue[n];
        if d != destination || c.len() > segment || bytes + c.len() > MAX_GSO_BYTES {
            break;
        }
        bytes += c.len();
        n += 1;
        if c.len() < segment {
            break;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Each call as (destination port, bytes, GSO segment or None, datagrams).
    type Shape = (u16, usize, Option<usize>, usize);

    fn flush_all(outbox: &mut Outbox, segments: usize, messages: usize) -> (Vec<Shape>, Flushed) {
        let mut calls = Vec::new();
        let limits = BatchLimits { segments, messages };
        let flushed = outbox.flush(limits, |b| {
            match b {
                SendBatch::Segmented {
                    destination,
                    contents,
                    segment,
                    datagrams,
                } => {
                    assert_eq!(*datagrams, contents.len().div_ceil(*segment));
                    calls.push((
                        destination.port(),
                        contents.len(),
                        Some(*segment),
                        *datagrams,
                    ));
                }
                SendBatch::Each(d) => {
                    calls.extend(d.iter().map(|(a, c)| (a.port(), c.len(), None, 1)));
                }
            }
            b.datagrams()
        });
        (calls, flushed)
    }

    #[test]
    fn equal_datagrams_to_one_destination_share_a_gso_call() {
        let mut o = Outbox::default();
        for i in 0..4u8 {
            o.push(addr(1), vec![i; 1200]);
        }
        o.push(addr(1), vec![9; 300]); // a shorter last one still fits
        o.push(addr(1), vec![7; 1200]); // but nothing after it
        let mut gathered = Vec::new();
        let flushed = o.flush(
            BatchLimits {
                segments: 64,
                messages: 64,
            },
            |b| {
                if let SendBatch::Segmented { contents, .. } = &b {
                    gathered = contents.to_vec();
                }
                b.datagrams()
            },
        );
        assert_eq!(gathered.len(), 4 * 1200 + 300);
        assert_eq!((gathered[1200], gathered[4800]), (1, 9), "in order");
        assert_eq!(
            flushed,
            Flushed {
                datagrams: 6,
                bytes: 6300,
                calls: 2
            }
        );
        assert!(o.is_empty());
    }

    #[test]
    fn runs_break_at_a_new_destination_a_larger_datagram_and_the_limits() {
        let mut o = Outbox::default();
        o.push(addr(1), vec![0; 100]);
        o.push(addr(2), vec![0; 100]);
        o.push(addr(2), vec![0; 200]); // larger than the run's segment
        for _ in 0..5 {
            o.push(addr(3), vec![0; 1000]);
        }
        let (calls, _) = flush_all(&mut o, 3, 64);
        assert_eq!(
            calls,
            vec![
                (1, 100, None, 1),
                (2, 100, None, 1),
                (2, 200, None, 1),
                (3, 3000, Some(1000), 3),
                (3, 2000, Some(1000), 2),
            ]
        );
        // The byte limit: 60 datagrams of 1200 B are more than one call carries.
        for _ in 0..60 {
            o.push(addr(4), vec![0; 1200]);
        }
        let (calls, flushed) = flush_all(&mut o, 64, 64);
        assert!(calls.iter().all(|c| c.1 <= MAX_GSO_BYTES));
        assert_eq!(calls.len(), 2);
        assert_eq!(flushed.datagrams, 60);
    }

    #[test]
    fn datagrams_to_many_destinations_share_a_call_up_to_the_limit() {
        let mut o = Outbox::default();
        for port in 0..10 {
            o.push(addr(port), vec![0; 500]);
        }
        let mut sizes = Vec::new();
        let flushed = o.flush(
            BatchLimits {
                segments: 64,
                messages: 4,
            },
            |b| {
                sizes.push(b.datagrams());
                b.datagrams()
            },
        );
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(
            flushed,
            Flushed {
                datagrams: 10,
                bytes: 5000,
                calls: 3
            }
        );
    }

    #[test]
    fn what_a_full_socket_refuses_is_not_counted() {
        let mut o = Outbox::default();
        for port in 0..3 {
            o.push(addr(port), vec![0; 500]);
        }
        for _ in 0..2 {
            o.push(addr(9), vec![0; 500]);
        }
        // The first call gets one of three datagrams out; the GSO call none.
        let flushed = o.flush(
            BatchLimits {
                segments: 64,
                messages: 64,
            },
            |b| match b {
                SendBatch::Each(_) => 1,
                SendBatch::Segmented { .. } => 0,
            },
        );
        assert_eq!(
            flushed,
            Flushed {
                datagrams: 1,
                bytes: 500,
                calls: 2
            }
        );
        // Without any batching every datagram is its own call.
        for port in 0..3 {
            o.push(addr(port), vec![0; 500]);
        }
        let (calls, flushed) = flush_all(&mut o, 1, 1);
        assert_eq!(calls.len(), 3);
        assert_eq!(flushed.calls, 3);
    }
}
