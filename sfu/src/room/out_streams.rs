//! The outgoing RTP streams of one session, in str0m's RTP mode: each
//! forwarded packet keeps the publisher's payload (shared, not copied) and
//! gets a header of this stream: its SSRC, its payload type for the codec,
//! and the sequence numbers, timestamps and VP8 ids of its
//! [`StreamRewriter`].
//!
//! Audio with redundancy (RED, RFC 2198) goes as RED to subscribers that
//! negotiated it on the line and as its primary encoding (plain Opus) to
//! the others.
//!
//! Streams are looked up once by media line (and rid, on a relay's lines)
//! and then addressed by SSRC, str0m's direct lookup. They are sent
//! unpaced: forwarded media is never queued behind str0m's pacer (the layer
//! choice keeps each subscriber under its estimate; padding probes are
//! still paced). str0m keeps what was sent for NACKs.

use std::sync::Arc;
use std::time::Duration;

use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, Ssrc, Vp8Descriptor};
use str0m::Rtc;

use crate::forward::codec::dependency_descriptor;
use crate::forward::descriptor_rewriter::{DescriptorRewriter, ReadDescriptor};
use crate::forward::payload_map;
use crate::forward::red::RedLayout;
use crate::forward::rewriter::{Incoming, StreamRewriter};
use crate::forward::router::Delivery;
use crate::forward::ParticipantId;
use crate::room::dd_extension::DescriptorBytes;

/// Video packets kept per outgoing stream for NACK resends, and for how
/// long: 3 s of a 2.5 Mbit/s layer (~300 B of header per entry; the payload
/// is shared with the publisher's packet). Resends stop while they exceed
/// [`RTX_RATIO_CAP`] of what is sent, so after a sudden drop in a viewer's
/// bandwidth its NACKs are answered only once that share falls; the
/// packets must still be there then (str0m's default age, 3 s).
const RTX_CACHE_PACKETS: usize = 1024;
const RTX_CACHE_AGE: Duration = Duration::from_secs(3);
/// str0m's default: resends stop while they exceed this share of what is sent.
const RTX_RATIO_CAP: f32 = 0.15;

/// A publisher's packet as every subscriber's stream writes it: prepared
/// once per incoming packet.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub incoming: Incoming,
    /// The publisher's payload type and codec parameters.
    pub params: PayloadParams,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    /// Header extensions carried to subscribers (audio level, orientation…).
    pub ext: ExtensionValues,
    /// The parsed VP8 payload descriptor (to patch picture ids).
    pub vp8: Option<Vp8Descriptor>,
    pub video: bool,
    /// The payload is RED (RFC 2198) around `params`' codec.
    pub red: Option<RedPayload>,
    /// The AV1 dependency descriptor, read (each stream writes its own).
    pub descriptor: Option<ReadDescriptor>,
}

/// A RED payload as subscribers' streams write it.
#[derive(Debug, Clone)]
pub struct RedPayload {
    pub layout: RedLayout,
    /// The primary encoding alone, for subscribers without RED.
    pub primary: Arc<[u8]>,
}

/// Outcome of writing a packet to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The subscriber has no payload type its decoder could use.
    NoCompatibleCodec,
    /// The media line (or its stream) is gone, or the session not connected.
    NotWritable,
    /// The packet could not be placed in the stream (from before a switch,
    /// or older than the stream's history): dropped.
    Late,
    /// Nothing to send this subscriber: a RED packet without a new primary
    /// encoding, to a subscriber without RED (skipped in its numbering).
    Nothing,
}

#[derive(Debug)]
struct OutStream {
    ssrc: Ssrc,
    rewriter: StreamRewriter,
    /// Frame numbers and active decode targets of AV1 dependency descriptors.
    descriptors: DescriptorRewriter,
    /// The subscriber negotiated the dependency descriptor on the line.
    takes_descriptor: bool,
    /// Payload types per (publisher, publisher's payload type).
    pts: Vec<(ParticipantId, Pt, Option<SubscriberPts>)>,
}

/// The session's outgoing streams by media line and rid: a few per
/// session (two for a viewer), so a list searched in order beats hashing
/// the key on every packet.
#[derive(Debug, Default)]
pub struct OutStreams {
    streams: Vec<((Mid, Option<Rid>), OutStream)>,
}

impl OutStreams {
    /// Write `packet` on the stream of `mid` (and `rid`, on a relay line),
    /// as `delivery` says: a stream that starts over (`fresh`), a picture
    /// that ends here for this subscriber (`ends_picture`: the marker).
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        (mid, rid): (Mid, Option<Rid>),
        delivery: &Delivery,
        packet: &Forwarded,
    ) -> WriteOutcome {
        let Some(stream) = self.stream(rtc, mid, rid, packet.video) else {
            return WriteOutcome::NotWritable;
        };
        let publisher = packet.incoming.source.track.publisher;
        let src_pt = packet.params.pt();
        let pts = match stream
            .pts
            .iter()
            .find(|(p, s, _)| *p == publisher && *s == src_pt)
        {
            Some((_, _, pts)) => *pts,
            None => {
                let pts = subscriber_pts(rtc, mid, &packet.params);
                stream.pts.push((publisher, src_pt, pts));
                pts
            }
        };
        let Some(pts) = pts else {
            return WriteOutcome::NoCompatibleCodec;
        };
        let (pt, payload) = match (&packet.red, pts.red) {
            (None, _) => (pts.main, packet.payload.clone()),
            (Some(_), Some(red_pt)) if pts.main == src_pt => (red_pt, packet.payload.clone()),
            (Some(red), Some(red_pt)) => (
                red_pt,
                red.layout.renumbered(&packet.payload, src_pt, pts.main),
            ),
            (Some(red), None) if red.primary.is_empty() => {
                stream.rewriter.skip(&packet.incoming);
                return WriteOutcome::Nothing;
            }
            (Some(red), None) => (pts.main, red.primary.clone()),
        };
        let Some(out) = stream.rewriter.forward(&packet.incoming, delivery.fresh) else {
            return WriteOutcome::Late;
        };
        let mut ext = packet.ext.clone();
        if let Some(dd) = &packet.descriptor {
            let bytes = stream
                .descriptors
                .rewrite(dd, delivery.layers, delivery.fresh);
            ext.user_values.set(DescriptorBytes(bytes));
        }
        let mut write = RtpWrite::new(
            pt,
            SeqNo::from(out.seq),
            out.timestamp,
            packet.incoming.arrival,
            payload,
        )
        .marker(packet.marker || delivery.ends_picture)
        .ext_vals(ext)
        .nackable(packet.video);
        // Patched only where the ids change (not for a stream that still
        // carries its first source unchanged).
        let vp8_changed = out.vp8.is_some() && out.vp8 != packet.incoming.vp8;
        if let (Some(desc), Some(ids), true) = (packet.vp8, out.vp8, vp8_changed) {
            let mut patch = desc.patch();
            if let Some(pid) = ids.picture_id {
                patch = patch.picture_id(pid);
            }
            if let Some(tl0) = ids.tl0_pic_idx {
                patch = patch.tl0_pic_idx(tl0);
            }
            if let Ok(patch) = patch.build() {
                write = write.vp8_patch(patch);
            }
        }
        let ssrc = stream.ssrc;
        match rtc.direct_api().stream_tx(&ssrc) {
            Some(tx) => {
                tx.write_rtp(write);
                WriteOutcome::Written
            }
            None => {
                // Renegotiated away: looked up again by media line next time.
                self.streams.retain(|(key, _)| *key != (mid, rid));
                WriteOutcome::NotWritable
            }
        }
    }

    /// Whether the subscriber negotiated the AV1 dependency descriptor on
    /// `mid` (false also for a line without a stream yet).
    pub fn takes_descriptor(&mut self, rtc: &mut Rtc, mid: Mid, rid: Option<Rid>) -> bool {
        self.stream(rtc, mid, rid, true)
            .is_some_and(|s| s.takes_descriptor)
    }

    /// A packet of the stream's flowing source dropped on purpose: the
    /// stream's numbering skips it.
    pub fn skip(&mut self, mid: Mid, rid: Option<Rid>, packet: &Forwarded) {
        if let Some((_, stream)) = self.streams.iter_mut().find(|(key, _)| *key == (mid, rid)) {
            stream.rewriter.skip(&packet.incoming);
        }
    }

    /// The stream of `mid`/`rid`, set up on first use.
    fn stream(
        &mut self,
        rtc: &mut Rtc,
        mid: Mid,
        rid: Option<Rid>,
        video: bool,
    ) -> Option<&mut OutStream> {
        let found = self.streams.iter().position(|(key, _)| *key == (mid, rid));
        let index = match found {
            Some(i) => i,
            None => {
                let takes_descriptor = rtc.media(mid).is_some_and(|m| {
                    m.remote_extmap()
                        .iter_video()
                        .any(|(_, e)| e.as_uri() == dependency_descriptor::URI)
                });
                let mut api = rtc.direct_api();
                let tx = api.stream_tx_by_mid(mid, rid)?;
                tx.set_unpaced(true);
                if video {
                    tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
                }
                let stream = OutStream {
                    takes_descriptor,
                    ssrc: tx.ssrc(),
                    rewriter: StreamRewriter::default(),
                    descriptors: DescriptorRewriter::default(),
                    pts: Vec::new(),
                };
                self.streams.push(((mid, rid), stream));
                self.streams.len() - 1
            }
        };
        self.streams.get_mut(index).map(|(_, stream)| stream)
    }
}

/// A subscriber's payload types for one publisher codec on one line.
#[derive(Debug, Clone, Copy)]
struct SubscriberPts {
    main: Pt,
    /// Its RED payload type, when the subscriber negotiated RED.
    red: Option<Pt>,
}

/// The subscriber's payload types on `mid` for packets described by `src`.
fn subscriber_pts(rtc: &Rtc, mid: Mid, src: &PayloadParams) -> Option<SubscriberPts> {
    let main = payload_map::select(src, negotiated_params(rtc, mid))?;
    let red = negotiated_params(rtc, mid)
        .find(|p| p.pt() == main)
        .and_then(|p| p.red());
    Some(SubscriberPts { main, red })
}

/// The codec parameters negotiated on line `mid` of `rtc`: those of the
/// payload types the remote side listed there (none for an unknown line).
pub fn negotiated_params(rtc: &Rtc, mid: Mid) -> impl Iterator<Item = &PayloadParams> {
    let remote = rtc.media(mid).map_or(&[][..], |m| m.remote_pts());
    rtc.codec_config()
        .params()
        .iter()
        .filter(move |p| remote.contains(&p.pt()))
}
