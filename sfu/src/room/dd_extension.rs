//! The AV1 dependency descriptor header extension as str0m carries it: a
//! user extension whose value is the descriptor's bytes, unparsed
//! ([`DescriptorBytes`]). Reading a descriptor needs the template structure
//! of an earlier packet of the same stream, which str0m's per-packet
//! extension parsing cannot keep; the forwarding path reads it
//! (`forward::codec::dependency_descriptor`) and hands each subscriber's
//! stream its own rewritten bytes to write.
//!
//! Negotiated on video lines only, at [`DEFAULT_ID`] in the server's own
//! offers (an offerer's id wins in an answer), and in an answer only where
//! the server reads or writes it ([`unread_descriptors_dropped`]).

use std::borrow::Cow;
use std::sync::Arc;

use str0m::rtp::{Extension, ExtensionSerializer, ExtensionValues};
use str0m::RtcConfig;

use crate::forward::codec::dependency_descriptor::URI;
use crate::room::offer::media_sections;

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

/// `offer` as the server answers it: the descriptor's `a=extmap` line is
/// left out of the video lines the offerer sends on with another codec than
/// AV1 first, so it is negotiated where the server writes it (lines the
/// offerer receives on; it is written for AV1 only) and where it reads it
/// (AV1 sent to it), not elsewhere. Chromium advertises it on every line it
/// sends on and, once negotiated, attaches it to VP8 too; a meeting of four
/// livekit-client pages with it negotiated on every line stalled a remote
/// VP8 video at 320 wide in 2 of 3 runs.
pub fn unread_descriptors_dropped(offer: &str) -> Cow<'_, str> {
    let unread: Vec<bool> = media_sections(offer)
        .iter()
        .map(|s| {
            s.kind == "video"
                && s.sends()
                && !s
                    .codecs
                    .first()
                    .is_some_and(|c| c.eq_ignore_ascii_case("AV1"))
        })
        .collect();
    if !unread.contains(&true) || !offer.contains(URI) {
        return Cow::Borrowed(offer);
    }
    let mut kept = String::with_capacity(offer.len());
    let mut section: Option<usize> = None;
    for line in offer.split_inclusive('\n') {
        let attr = line.trim();
        if attr.starts_with("m=") {
            section = Some(section.map_or(0, |i| i + 1));
        }
        let descriptor =
            attr.starts_with("a=extmap:") && attr.split_ascii_whitespace().nth(1) == Some(URI);
        let in_unread = section.is_some_and(|i| unread.get(i).copied().unwrap_or(false));
        if !(descriptor && in_unread) {
            kept.push_str(line);
        }
    }
    Cow::Owned(kept)
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

    /// Chromium's lines as it offers them: the descriptor on each it sends on.
    fn offer() -> String {
        let dd = format!("a=extmap:12 {URI}\r\n");
        let video = |dir: &str, first: &str, mid: u8| {
            format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 96 45\r\na=mid:{mid}\r\n\
                 a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                 {dd}a={dir}\r\na=rtpmap:96 {first}/90000\r\na=rtpmap:45 {}/90000\r\n",
                if first == "VP8" { "AV1" } else { "VP8" }
            )
        };
        format!(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n{}{}{}",
            video("sendonly", "VP8", 1),
            video("sendonly", "AV1", 2),
            video("recvonly", "VP8", 3),
        )
    }

    #[test]
    fn the_descriptor_is_answered_only_where_it_is_read_or_written() {
        let offer = offer();
        let answered = unread_descriptors_dropped(&offer);
        let with_descriptor: Vec<String> = media_sections(&answered)
            .iter()
            .zip(answered.split("m=").skip(1))
            .filter(|(_, text)| text.contains(URI))
            .filter_map(|(s, _)| s.mid.clone())
            .collect();
        // Not on VP8 sent to the server; on AV1 sent to it and on what it sends.
        assert_eq!(with_descriptor, ["2", "3"]);
        // Everything else is untouched.
        assert_eq!(
            answered.len() + format!("a=extmap:12 {URI}\r\n").len(),
            offer.len()
        );
        // An offer without VP8 sent to the server is answered as it is.
        let viewer = offer.replace("a=sendonly", "a=recvonly");
        assert!(matches!(
            unread_descriptors_dropped(&viewer),
            Cow::Borrowed(_)
        ));
    }
}
