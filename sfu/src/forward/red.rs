//! Audio redundancy (RED, RFC 2198) as the forwarding core needs it: where
//! the primary encoding of a RED payload is, and the payload with its block
//! payload types renumbered for a subscriber.
//!
//! A RED payload is a list of block headers, then the blocks' data in the
//! same order. Every header but the last is four bytes (F=1, block payload
//! type (7), timestamp offset (14), block length (10)); the last is one
//! byte (F=0, payload type) and describes the primary encoding, whose data
//! runs to the end of the payload. Chromium sends Opus with one redundant
//! block (the previous frame).
//!
//! Subscribers that negotiated RED get the payload as the publisher sent it
//! (renumbered if their Opus payload type differs); the others get the
//! primary block alone, as plain Opus. Input is untrusted: every length is
//! checked, nothing panics.

use std::ops::Range;
use std::sync::Arc;

use str0m::media::Pt;

/// More redundant blocks than any sender uses (Chromium: 1; libwebrtc
/// allows up to 9). A payload announcing more is refused.
pub const MAX_BLOCKS: usize = 16;

/// Why a RED payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedError {
    /// The headers or the blocks they announce run past the payload.
    #[error("RED payload is truncated")]
    Truncated,
    /// More than [`MAX_BLOCKS`] redundant blocks.
    #[error("RED payload has too many blocks")]
    TooManyBlocks,
}

/// Where a RED payload's parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedLayout {
    /// Payload type of the primary encoding.
    pub primary_pt: u8,
    /// Byte range of the primary encoding's data.
    pub primary: Range<usize>,
    /// Offsets of the block headers' payload-type bytes (redundant blocks
    /// first, the primary's last).
    pt_offsets: Vec<usize>,
}

/// Reads the block headers of a RED payload.
pub fn parse(payload: &[u8]) -> Result<RedLayout, RedError> {
    let mut pos = 0;
    let mut data_len = 0usize;
    let mut pt_offsets = Vec::with_capacity(2);
    loop {
        let first = *payload.get(pos).ok_or(RedError::Truncated)?;
        pt_offsets.push(pos);
        if first & 0x80 == 0 {
            // The primary's one-byte header.
            pos += 1;
            let start = pos + data_len;
            if start > payload.len() {
                return Err(RedError::Truncated);
            }
            return Ok(RedLayout {
                primary_pt: first & 0x7f,
                primary: start..payload.len(),
                pt_offsets,
            });
        }
        if pt_offsets.len() > MAX_BLOCKS {
            return Err(RedError::TooManyBlocks);
        }
        let header = payload.get(pos..pos + 4).ok_or(RedError::Truncated)?;
        // Block length: the low 10 bits of the last two bytes.
        data_len += usize::from(u16::from_be_bytes([header[2], header[3]]) & 0x03ff);
        pos += 4;
    }
}

impl RedLayout {
    /// The primary encoding's data, as a payload of its own.
    pub fn primary_payload(&self, payload: &[u8]) -> Arc<[u8]> {
        Arc::from(payload.get(self.primary.clone()).unwrap_or_default())
    }

    /// The payload with every block whose payload type is `from` renumbered
    /// to `to` (a subscriber whose Opus payload type differs).
    pub fn renumbered(&self, payload: &[u8], from: Pt, to: Pt) -> Arc<[u8]> {
        let mut out = payload.to_vec();
        for &at in &self.pt_offsets {
            if let Some(b) = out.get_mut(at) {
                if *b & 0x7f == *from {
                    *b = (*b & 0x80) | (*to & 0x7f);
                }
            }
        }
        Arc::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium's RED for Opus: one redundant block (the previous 20 ms
    /// frame, timestamp offset 960, 3 bytes) then the primary (pt 111).
    fn chromium_red(previous: &[u8], primary: &[u8]) -> Vec<u8> {
        let len = previous.len() as u16;
        let offset: u32 = 960;
        let mut p = vec![0x80 | 111];
        let word = (offset << 10) | u32::from(len);
        p.extend(&word.to_be_bytes()[1..]);
        p.push(111);
        p.extend(previous);
        p.extend(primary);
        p
    }

    #[test]
    fn the_primary_is_found_after_the_redundant_block() {
        let p = chromium_red(&[1, 2, 3], &[9, 8, 7, 6]);
        let layout = parse(&p).expect("parses");
        assert_eq!(layout.primary_pt, 111);
        assert_eq!(&*layout.primary_payload(&p), &[9, 8, 7, 6]);
    }

    #[test]
    fn a_primary_alone_and_an_empty_primary() {
        let layout = parse(&[111, 5, 5]).expect("parses");
        assert_eq!(layout.primary, 1..3);
        // DTX-like: a redundant block and nothing new.
        let p = chromium_red(&[1, 2], &[]);
        assert!(parse(&p).expect("parses").primary.is_empty());
    }

    #[test]
    fn renumbering_touches_only_the_block_payload_types() {
        let p = chromium_red(&[111, 111], &[111]);
        let layout = parse(&p).expect("parses");
        let out = layout.renumbered(&p, Pt::from(111), Pt::from(109));
        assert_eq!(out[0], 0x80 | 109);
        assert_eq!(out[4], 109);
        assert_eq!(&out[1..4], &p[1..4], "offset and length kept");
        assert_eq!(&out[5..], &p[5..], "data untouched");
    }

    #[test]
    fn lying_lengths_and_endless_headers_are_refused() {
        // The redundant block announces 200 bytes; 3 follow.
        let mut p = chromium_red(&[1, 2, 3], &[]);
        p[3] = 200;
        assert_eq!(parse(&p), Err(RedError::Truncated));
        assert_eq!(parse(&[]), Err(RedError::Truncated));
        assert_eq!(parse(&[0x80 | 111, 0, 0]), Err(RedError::Truncated));
        let endless: Vec<u8> = (0..100).flat_map(|_| [0x80 | 111, 0, 0, 0]).collect();
        assert_eq!(parse(&endless), Err(RedError::TooManyBlocks));
        // Every prefix and every byte flip: an answer, never a panic.
        let p = chromium_red(&[1, 2, 3], &[4, 5]);
        for len in 0..p.len() {
            let _ = parse(&p[..len]);
        }
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] ^= 0xff;
            if let Ok(l) = parse(&q) {
                assert!(l.primary.end <= q.len());
            }
        }
    }
}
