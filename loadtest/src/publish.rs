//! A publishing peer's media written as RTP (str0m's RTP mode): each due
//! frame of its `MediaSource` is cut into payloads (`packetize`) and
//! written on the send stream of its media line and simulcast layer, one
//! SSRC per layer (str0m adds the mid and rid header extensions); a
//! scalable VP9 or AV1 stream's spatial layers go on one stream, the
//! marker on the last packet of the picture's top layer; an AV1 packet's
//! dependency descriptor goes in its header extension (a user value for
//! the server's serializer, `sfu::room::dd_extension`). Each stream keeps
//! its own sequence numbers and, for VP8 and VP9, picture ids, for AV1
//! frame numbers.

use std::sync::Arc;
use std::time::Instant;

use sfu::room::dd_extension::DescriptorBytes;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::Rtc;

use crate::av1::{self, Av1Numbering};
use crate::packetize::{h264, vp8, Vp8Numbering, MAX_PAYLOAD};
use crate::source::DueFrame;
use crate::stamp::VideoCodec;
use crate::vp9::{self, Vp9Layer, Vp9Numbering};

/// One send stream's numbering.
#[derive(Debug)]
struct TxStream {
    mid: Mid,
    /// None: audio, or video without simulcast.
    rid: Option<&'static str>,
    pt: Pt,
    /// Extended sequence number of the next packet.
    seq: u64,
    vp8: Vp8Numbering,
    vp9: Vp9Numbering,
    av1: Av1Numbering,
}

/// The send streams of one publishing peer.
#[derive(Debug, Default)]
pub struct RtpPublisher {
    streams: Vec<TxStream>,
}

/// str0m's name of a video codec.
pub fn codec_of(codec: VideoCodec) -> Codec {
    match codec {
        VideoCodec::Vp8 => Codec::Vp8,
        VideoCodec::H264 => Codec::H264,
        VideoCodec::Vp9 => Codec::Vp9,
        VideoCodec::Av1 => Codec::Av1,
    }
}

/// The payload type the remote accepted for `codec` on `mid`.
fn payload_type(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let remote = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
        .map(|p| p.pt())
}

impl RtpPublisher {
    /// Write `frame` on its stream (the first line of its kind in `mids`).
    /// A stream the session does not have (yet) is skipped, as str0m's
    /// frame writer skips it.
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        mids: &[(Mid, MediaKind)],
        codec: VideoCodec,
        frame: DueFrame,
        now: Instant,
    ) {
        let (kind, want) = match frame.rid {
            None => (MediaKind::Audio, Codec::Opus),
            Some(_) => (MediaKind::Video, codec_of(codec)),
        };
        let rid = frame.rid.filter(|r| !r.is_empty());
        let Some(mid) = mids.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m) else {
            return;
        };
        let i = match self
            .streams
            .iter()
            .position(|s| s.mid == mid && s.rid == rid)
        {
            Some(i) => i,
            None => {
                let Some(pt) = payload_type(rtc, mid, want) else {
                    return;
                };
                let mut api = rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, rid.map(Rid::from)) else {
                    return;
                };
                // Start below 2^15 (no rollover to signal) where the SSRC says.
                let seed = *tx.ssrc();
                self.streams.push(TxStream {
                    mid,
                    rid,
                    pt,
                    seq: u64::from(seed & 0x7fff),
                    vp8: Vp8Numbering::seeded(seed.rotate_left(7)),
                    vp9: Vp9Numbering::seeded(seed.rotate_left(7)),
                    av1: Av1Numbering::seeded(seed.rotate_left(7)),
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[i];
        // (payload, AV1 dependency descriptor)
        type Payloads = Vec<(Vec<u8>, Option<Vec<u8>>)>;
        let plain = |payloads: Vec<Vec<u8>>| -> Payloads {
            payloads.into_iter().map(|p| (p, None)).collect()
        };
        let layer = frame.svc.unwrap_or(Vp9Layer::single(0, 0));
        let payloads: Payloads = match kind {
            MediaKind::Audio => plain(vec![frame.data]),
            MediaKind::Video => match codec {
                VideoCodec::Vp8 => plain(vp8(&frame.data, &mut s.vp8, MAX_PAYLOAD)),
                VideoCodec::H264 => plain(h264(&frame.data, MAX_PAYLOAD)),
                VideoCodec::Vp9 => plain(vp9::packetize(
                    &frame.data,
                    &layer,
                    frame.keyframe,
                    &mut s.vp9,
                    MAX_PAYLOAD,
                )),
                VideoCodec::Av1 => {
                    av1::packetize(&frame.data, &layer, frame.keyframe, &mut s.av1, MAX_PAYLOAD)
                        .into_iter()
                        .map(|p| (p.payload, Some(p.descriptor)))
                        .collect()
                }
            },
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, s.rid.map(Rid::from)) else {
            return;
        };
        let last = payloads.len().saturating_sub(1);
        let video = kind == MediaKind::Video;
        // A scalable picture ends with its top spatial layer's frame.
        let ends_picture = frame.svc.is_none_or(|l| l.ends_picture());
        for (n, (payload, descriptor)) in payloads.into_iter().enumerate() {
            let mut ext_vals = ExtensionValues::default();
            if let Some(d) = descriptor {
                ext_vals.user_values.set(DescriptorBytes(Arc::from(d)));
            }
            let write = RtpWrite::new(s.pt, s.seq.into(), frame.rtp_time as u32, now, payload)
                .marker(video && n == last && ends_picture)
                .ext_vals(ext_vals)
                // Video answers NACKs from str0m's send history.
                .nackable(video);
            tx.write_rtp(write);
            s.seq += 1;
        }
    }
}
