//! The room's words in LiveKit's types: participants, tracks, qualities,
//! ICE servers, and the constants a LiveKit client checks in a
//! `JoinResponse` (server version, ping timing, codecs).

use super::proto;
use crate::room_protocol::{self as room, MediaKindName, TrackSource};

/// The LiveKit server version this server answers like. livekit-client
/// refuses RPC below 1.8.0 and, above 1.13.6, publishes VP9/AV1 as rid
/// simulcast instead of one scalable stream; 1.9.0 keeps RPC and sends
/// scalable codecs as one stream, which the forwarder passes whole.
pub const COMPATIBLE_VERSION: &str = "1.9.0";
/// LiveKit's signalling protocol version spoken (JS 2.23 and the Rust
/// core send 17, Python 1.2 sends 18; nothing between differs for them).
pub const PROTOCOL_VERSION: i32 = 16;
/// Seconds between the client's pings, and of silence before it gives up
/// on the signal connection (both must be non-zero: the Rust core panics
/// on a zero interval).
pub const PING_INTERVAL_S: i32 = 5;
pub const PING_TIMEOUT_S: i32 = 15;

/// The codecs clients may publish (what the forwarder routes).
pub fn publish_codecs() -> Vec<proto::Codec> {
    [
        "video/VP8",
        "video/H264",
        "video/VP9",
        "video/AV1",
        "audio/opus",
    ]
    .into_iter()
    .map(|mime| proto::Codec {
        mime: mime.into(),
        fmtp_line: String::new(),
    })
    .collect()
}

pub fn track_type(kind: MediaKindName) -> proto::TrackType {
    match kind {
        MediaKindName::Audio => proto::TrackType::Audio,
        MediaKindName::Video => proto::TrackType::Video,
    }
}

pub fn track_source(source: TrackSource) -> proto::TrackSource {
    match source {
        TrackSource::Camera => proto::TrackSource::Camera,
        TrackSource::Microphone => proto::TrackSource::Microphone,
        TrackSource::Screen => proto::TrackSource::ScreenShare,
        TrackSource::ScreenAudio => proto::TrackSource::ScreenShareAudio,
        TrackSource::Unknown => proto::TrackSource::Unknown,
    }
}

pub fn room_source(source: i32) -> TrackSource {
    match proto::TrackSource::try_from(source) {
        Ok(proto::TrackSource::Camera) => TrackSource::Camera,
        Ok(proto::TrackSource::Microphone) => TrackSource::Microphone,
        Ok(proto::TrackSource::ScreenShare) => TrackSource::Screen,
        Ok(proto::TrackSource::ScreenShareAudio) => TrackSource::ScreenAudio,
        _ => TrackSource::Unknown,
    }
}

// `simulcast` is deprecated in the protocol but clients still read it.
#[allow(deprecated)]
pub fn track_info(t: &room::TrackInfo) -> proto::TrackInfo {
    let qualities = [
        proto::VideoQuality::Low,
        proto::VideoQuality::Medium,
        proto::VideoQuality::High,
    ];
    // Lowest first; with fewer than three, the top one is HIGH.
    let skip = qualities.len().saturating_sub(t.layers.len());
    let layers: Vec<proto::VideoLayer> = t
        .layers
        .iter()
        .zip(qualities.iter().skip(skip))
        .map(|(l, q)| proto::VideoLayer {
            quality: *q as i32,
            width: l.width,
            height: l.height,
            ..Default::default()
        })
        .collect();
    let top = t.layers.last();
    proto::TrackInfo {
        width: top.map_or(0, |l| l.width),
        height: top.map_or(0, |l| l.height),
        layers,
        sid: t.sid.clone(),
        r#type: track_type(t.kind) as i32,
        name: t.name.clone(),
        muted: t.muted,
        simulcast: t.simulcast,
        source: track_source(t.source) as i32,
        ..Default::default()
    }
}

pub fn quality(q: room::Quality) -> proto::ConnectionQuality {
    match q {
        room::Quality::Excellent => proto::ConnectionQuality::Excellent,
        room::Quality::Good => proto::ConnectionQuality::Good,
        room::Quality::Poor => proto::ConnectionQuality::Poor,
        room::Quality::Lost => proto::ConnectionQuality::Lost,
    }
}

/// A track's announced layer sizes, lowest first.
#[allow(deprecated)]
pub fn layer_sizes(t: &proto::TrackInfo) -> Vec<room::LayerSize> {
    t.layers
        .iter()
        .filter(|l| l.width > 0 && l.height > 0)
        .map(|l| room::LayerSize {
            width: l.width,
            height: l.height,
        })
        .collect()
}

/// A simulcast rid as LiveKit's clients name their layers (`q`, `h`, `f`).
pub fn rid_quality(rid: &str) -> proto::VideoQuality {
    match rid {
        "q" => proto::VideoQuality::Low,
        "h" => proto::VideoQuality::Medium,
        _ => proto::VideoQuality::High,
    }
}

pub fn participant_info(
    p: &room::ParticipantInfo,
    state: proto::participant_info::State,
) -> proto::ParticipantInfo {
    proto::ParticipantInfo {
        sid: p.sid.clone(),
        identity: p.identity.clone(),
        name: p.name.clone(),
        metadata: p.metadata.clone(),
        state: state as i32,
        tracks: p.tracks.iter().map(track_info).collect(),
        is_publisher: !p.tracks.is_empty(),
        permission: Some(proto::ParticipantPermission {
            can_subscribe: true,
            can_publish: true,
            can_publish_data: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ice_server(s: &crate::IceServer) -> proto::IceServer {
    proto::IceServer {
        urls: s.urls.clone(),
        username: s.username.clone().unwrap_or_default(),
        credential: s.credential.clone().unwrap_or_default(),
    }
}

/// A room's sid, the same for every member: `RM_` and a hash of its name.
pub fn room_sid(name: &str) -> String {
    // FNV-1a: stable across processes and nodes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("RM_{h:016x}")
}

/// The track a client announces with `add_track`, with a new sid.
// `simulcast`, `layers`, `stereo`, `disable_dtx` are deprecated in the
// protocol, but the SDKs still read them from `TrackInfo`.
#[allow(deprecated)]
pub fn announced_track(req: &proto::AddTrackRequest) -> proto::TrackInfo {
    let mut layers = req.layers.clone();
    layers.sort_by_key(|l| l.quality);
    let codecs = req
        .simulcast_codecs
        .iter()
        .map(|c| proto::SimulcastCodecInfo {
            mime_type: mime_of(&c.codec, req.r#type),
            cid: c.cid.clone(),
            layers: layers.clone(),
            ..Default::default()
        })
        .collect();
    proto::TrackInfo {
        sid: format!("TR_{:016x}", rand::random::<u64>()),
        r#type: req.r#type,
        name: req.name.chars().take(64).collect(),
        muted: req.muted,
        width: req.width,
        height: req.height,
        simulcast: layers.len() > 1,
        disable_dtx: req.disable_dtx,
        source: req.source,
        layers,
        codecs,
        stereo: req.stereo,
        disable_red: req.disable_red,
        stream: req.stream.clone(),
        audio_features: req.audio_features.clone(),
        ..Default::default()
    }
}

/// LiveKit's clients name codecs `vp8` (JS, Rust) or `video/vp8` (Go).
fn mime_of(codec: &str, track_type: i32) -> String {
    if codec.contains('/') {
        return codec.to_string();
    }
    let kind = if track_type == proto::TrackType::Audio as i32 {
        "audio"
    } else {
        "video"
    };
    format!("{kind}/{codec}")
}
