//! The room protocol's messages (`signaling/PROTOCOL.md`, the node
//! protocol): what a room member and the room's worker say to each other —
//! a LiveKit session inside the node (which translates LiveKit's
//! signalling to and from them) or another node's bridge over `/rtc` — and
//! the envelopes of data-channel messages.
//!
//! Plain serde types shared by the socket handlers and the media workers
//! (which act on them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::IceServer;

/// Where a published track comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
    #[default]
    #[serde(other)]
    Unknown,
}

/// What a client says about a media line it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PublishInfo {
    #[serde(default)]
    pub source: TrackSource,
    #[serde(default)]
    pub name: String,
    /// Bridges only (another node's link into the room): the track's sid
    /// and its publisher's sid there, kept so every node names it alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// The picture sizes of its simulcast layers, lowest first, as the
    /// client announced them (LiveKit clients' `add_track`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSize>,
    /// The codec the client asked to publish it with (a mime type such as
    /// `video/av1`, LiveKit clients' `add_track`): put first in its line
    /// of the offer, so the answer makes the client send with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
}

/// A video layer's announced picture size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSize {
    pub width: u32,
    pub height: u32,
}

/// A published track as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub sid: String,
    pub kind: MediaKindName,
    pub source: TrackSource,
    pub name: String,
    pub muted: bool,
    pub simulcast: bool,
    /// Announced layer sizes, lowest first (empty: not announced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKindName {
    Audio,
    Video,
}

/// Connection quality of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    #[default]
    Excellent,
    Good,
    Poor,
    Lost,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub tracks: Vec<TrackInfo>,
    pub quality: Quality,
}

/// One active speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    pub sid: String,
    /// 0 (silence) to 1 (loudest).
    pub level: f32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityUpdate {
    pub sid: String,
    pub quality: Quality,
}

/// Limits the client should know about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientLimits {
    pub max_tracks: usize,
    pub max_data_message_bytes: usize,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMessage {
    Offer {
        sdp: String,
        #[serde(default)]
        publish: BTreeMap<String, PublishInfo>,
        #[serde(default)]
        subscribe: BTreeMap<String, String>,
    },
    Mute {
        track: String,
        muted: bool,
    },
    #[serde(rename_all = "camelCase")]
    Subscription {
        track: String,
        #[serde(default)]
        subscribed: Option<bool>,
        /// `Some(None)` (explicit null) removes the limit; `None` (absent)
        /// keeps it, so it is not serialized at all.
        #[serde(
            default,
            with = "double_option",
            skip_serializing_if = "Option::is_none"
        )]
        max_width: Option<Option<u32>>,
    },
    Metadata {
        #[serde(default)]
        metadata: Option<String>,
        #[serde(default)]
        name: Option<String>,
    },
    Leave {},
    /// Receive these tracks (sids) on a connection of their own that the
    /// server offers (a LiveKit client's subscriber peer connection):
    /// the server answers with an `offer` whenever the lines must change.
    /// `paused` tracks keep their line and get nothing forwarded (a
    /// hidden tile); `restartIce` restarts that connection's ICE.
    #[serde(rename_all = "camelCase")]
    Downlink {
        tracks: Vec<String>,
        #[serde(default)]
        paused: Vec<String>,
        #[serde(default)]
        restart_ice: bool,
    },
    /// The client's answer to the server's `offer` of its downlink.
    Answer {
        sdp: String,
    },
    /// Bridges only: a participant of the room on the bridge's node joined
    /// or changed (its name, metadata; its tracks come with offers).
    Remote {
        participant: ParticipantInfo,
        /// It just joined (not re-announced by a re-opened bridge): it
        /// replaces any other session of its identity in the room.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fresh: bool,
    },
    /// Bridges only: that participant left.
    RemoteLeft {
        sid: String,
    },
    /// Bridges only: the layers (rids) of track `track` that the bridge's
    /// node wants (its subscribers' dynacast).
    Layers {
        track: String,
        active: BTreeMap<String, bool>,
    },
    /// Bridges only: the connection quality of the bridge's participants
    /// changed (each node grades its own participants' links).
    Quality {
        updates: Vec<QualityUpdate>,
    },
    /// Bridges only: a data message of the bridge's node for this room
    /// (`to`: identities; none: everyone).
    Data(BridgedData),
    Ping {
        #[serde(default)]
        id: Option<u64>,
    },
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Joined {
        room: String,
        resumed: bool,
        participant: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
        resume_token: String,
        ice_servers: Vec<IceServer>,
        limits: ClientLimits,
    },
    Answer {
        sdp: String,
    },
    /// The server's offer for the client's downlink connection (see the
    /// client's `downlink`): `tracks` says which mid carries which track.
    Offer {
        sdp: String,
        tracks: BTreeMap<String, String>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        sid: String,
        identity: String,
    },
    TrackPublished {
        participant: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant: String,
        track: String,
    },
    TrackMuted {
        participant: String,
        track: String,
        muted: bool,
    },
    Speakers {
        speakers: Vec<Speaker>,
    },
    ConnectionQuality {
        updates: Vec<QualityUpdate>,
    },
    Layers {
        track: String,
        active: BTreeMap<String, bool>,
    },
    Removed {
        reason: String,
    },
    RoomClosed {
        reason: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Pong {
        id: Option<u64>,
    },
    /// To bridges only: a data message of this room for the bridge's node.
    Data(BridgedData),
    /// To bridges only: an administrator acts on one of the participants
    /// the bridge speaks for (by identity); its node applies it.
    Manage {
        identity: String,
        action: ManageAction,
    },
}

/// What an administrator does to a participant on another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum ManageAction {
    Remove,
    /// The identity joined again elsewhere in the room.
    Replace,
    Mute {
        track: String,
        muted: bool,
    },
    Update {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

/// A data message crossing a bridge between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgedData {
    /// The data channel it was sent on (`reliable`, `lossy`).
    pub label: String,
    pub data: RelayedData,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// After this message the server closes the socket.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ServerMessage::Removed { .. }
                | ServerMessage::RoomClosed { .. }
                | ServerMessage::Error {
                    code: ErrorCode::ResumeFailed,
                    ..
                }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    TooLarge,
    RateLimited,
    NotAllowed,
    Limit,
    Negotiation,
    NotFound,
    ResumeFailed,
}

/// A data-channel message as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataEnvelope {
    #[serde(default)]
    pub topic: Option<String>,
    pub payload: serde_json::Value,
    #[serde(default)]
    pub to: Option<Vec<String>>,
}

/// A data-channel message as the server relays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayedData {
    /// The sender's identity (`None`: the server / admin API).
    pub from: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    pub payload: serde_json::Value,
    /// The LiveKit `DataPacket` (protobuf, stamped with its sender) when a
    /// LiveKit client sent it; base64 in JSON (between nodes).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub packet: Option<Vec<u8>>,
}

/// `Option<Vec<u8>>` as an optional base64 string.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// Parse a client message with an error a client developer can act on.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, String> {
    serde_json::from_str(text).map_err(|e| {
        let e = e.to_string();
        if e.contains("unknown variant") {
            format!("unknown message type: {e}")
        } else {
            format!("bad message: {e}")
        }
    })
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Option<u32>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(inner) => inner.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
        Option::<u32>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_message_of_the_protocol_document_parses() {
        let cases = [
            r#"{"type":"offer","sdp":"v=0","publish":{"0":{"source":"microphone","name":"mic"}},"subscribe":{"3":"TR_a_1"}}"#,
            r#"{"type":"mute","track":"TR_a_0","muted":true}"#,
            r#"{"type":"subscription","track":"TR_a_1","subscribed":false}"#,
            r#"{"type":"subscription","track":"TR_a_1","maxWidth":320}"#,
            r#"{"type":"subscription","track":"TR_a_1","maxWidth":null}"#,
            r#"{"type":"metadata","metadata":"{}","name":"Alice"}"#,
            r#"{"type":"leave"}"#,
            r#"{"type":"downlink","tracks":["TR_a_1"],"paused":[],"restartIce":false}"#,
            r#"{"type":"answer","sdp":"v=0"}"#,
            r#"{"type":"ping","id":7}"#,
        ];
        for c in cases {
            parse_client_message(c).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
        let sub = parse_client_message(r#"{"type":"subscription","track":"t","maxWidth":null}"#);
        assert_eq!(
            sub,
            Ok(ClientMessage::Subscription {
                track: "t".into(),
                subscribed: None,
                max_width: Some(None)
            })
        );
        let sub = parse_client_message(r#"{"type":"subscription","track":"t"}"#);
        assert!(matches!(
            sub,
            Ok(ClientMessage::Subscription {
                max_width: None,
                ..
            })
        ));
    }

    #[test]
    fn client_messages_round_trip_through_json() {
        // Found by the `room_message` fuzz target: an absent `maxWidth`
        // ("keep the limit") was serialized as `"maxWidth":null`, which
        // parses back as "remove the limit".
        let text = r#"{"type":"subscription","track":"TR_9a8b_1","subscribed":false}"#;
        let msg = parse_client_message(text);
        let json = msg.as_ref().map(serde_json::to_string);
        assert!(
            matches!(&json, Ok(Ok(j)) if !j.contains("maxWidth")),
            "{json:?}"
        );
        for max_width in [None, Some(None), Some(Some(320))] {
            let msg = ClientMessage::Subscription {
                track: "t".into(),
                subscribed: None,
                max_width,
            };
            let json = serde_json::to_string(&msg).map_err(|e| e.to_string());
            let back = json.as_deref().map(parse_client_message);
            assert_eq!(back, Ok(Ok(msg)), "{json:?}");
        }
    }

    #[test]
    fn bad_client_messages_say_what_is_wrong() {
        let e = parse_client_message(r#"{"type":"jump"}"#).unwrap_err();
        assert!(
            e.contains("unknown message type") && e.contains("jump"),
            "{e}"
        );
        let e = parse_client_message(r#"{"type":"mute","track":"x"}"#).unwrap_err();
        assert!(e.contains("muted"), "{e}");
        let e = parse_client_message("not json").unwrap_err();
        assert!(e.starts_with("bad message"), "{e}");
        let e = parse_client_message(r#"{"type":"leave","extra":1}"#).unwrap_err();
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn server_messages_use_the_documented_names() {
        let m = ServerMessage::TrackMuted {
            participant: "PA_1".into(),
            track: "TR_1_0".into(),
            muted: true,
        };
        assert_eq!(
            serde_json::to_string(&m).ok().as_deref(),
            Some(r#"{"type":"trackMuted","participant":"PA_1","track":"TR_1_0","muted":true}"#)
        );
        let e = ServerMessage::error(ErrorCode::RateLimited, "slow down");
        assert_eq!(
            serde_json::to_string(&e).ok().as_deref(),
            Some(r#"{"type":"error","code":"rate_limited","message":"slow down"}"#)
        );
        assert!(ServerMessage::Removed { reason: "x".into() }.is_final());
        assert!(!e.is_final());
    }

    #[test]
    fn unknown_track_sources_are_accepted_as_unknown() {
        let p: PublishInfo = serde_json::from_str(r#"{"source":"hologram"}"#).unwrap_or_default();
        assert_eq!(p.source, TrackSource::Unknown);
    }
}
