//! The AV1 dependency descriptor header extension as str0m carries it: a
//! user extension whose value is the descriptor's bytes, unparsed
//! ([`DescriptorBytes`]). Reading a descriptor needs the template structure
//! of an earlier packet of the same stream, which str0m's per-packet
//! extension parsing cannot keep; the forwarding path reads it
//! (`forward::codec::dependency_descriptor`) and hands each subscriber's
//! stream its own rewritten bytes to write.
//!
//! Negotiated on video lines only, at [`DEFAULT_ID`] in the server's own
//! offers (an offerer's id wins in an answer).

use std::sync::Arc;

use str0m::rtp::{Extension, ExtensionSerializer, ExtensionValues};
use str0m::RtcConfig;

use crate::forward::codec::dependency_descriptor::URI;

/// The extension id the server offers it at (free in str0m's standard map).
pub const DEFAULT_ID: u8 = 12;

/// One-byte header extension elements carry at most this many bytes; a
/// longer descriptor (one with a template structure) needs the two-byte form.
const ONE_BYTE_MAX: usize = 16;

/// A packet's dependency descriptor, as received or as to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorBytes(pub Arc<[u8]>);

/// The str0m serializer: bytes in, bytes out.
#[derive(Debug)]
struct Serializer;

impl ExtensionSerializer for Serializer {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        match ev.user_values.get::<DescriptorBytes>() {
            Some(DescriptorBytes(bytes)) if bytes.len() <= buf.len() => {
                buf[..bytes.len()].copy_from_slice(bytes);
                bytes.len()
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        if buf.is_empty() {
            return false;
        }
        ev.user_values.set(DescriptorBytes(Arc::from(buf)));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        ev.user_values
            .get::<DescriptorBytes>()
            .is_some_and(|DescriptorBytes(b)| b.len() > ONE_BYTE_MAX)
    }
}

/// `config` with the dependency descriptor extension enabled.
pub fn enable(config: RtcConfig) -> RtcConfig {
    config.set_extension(DEFAULT_ID, Extension::with_serializer(URI, Serializer))
}

/// The descriptor bytes a packet's extensions carried, if any.
pub fn received(ev: &ExtensionValues) -> Option<Arc<[u8]>> {
    ev.user_values
        .get::<DescriptorBytes>()
        .map(|DescriptorBytes(b)| b.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_long_ones_need_the_two_byte_form() {
        let s = Serializer;
        let mut ev = ExtensionValues::default();
        assert!(!s.parse_value(&[], &mut ev), "an empty element is refused");
        assert!(s.parse_value(&[0x80, 0x01, 0x02], &mut ev));
        assert_eq!(received(&ev).as_deref(), Some(&[0x80u8, 0x01, 0x02][..]));
        assert!(!s.requires_two_byte_form(&ev));
        let mut buf = [0u8; 32];
        assert_eq!(s.write_to(&mut buf, &ev), 3);
        assert_eq!(&buf[..3], &[0x80, 0x01, 0x02]);
        // Too long for the buffer: nothing written, no panic.
        assert_eq!(s.write_to(&mut buf[..2], &ev), 0);
        ev.user_values
            .set(DescriptorBytes(Arc::from(&[7u8; 20][..])));
        assert!(s.requires_two_byte_form(&ev));
    }
}
