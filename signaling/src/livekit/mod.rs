//! LiveKit's client signalling (issue 21, in progress): what the official
//! LiveKit SDKs send and expect on their signal WebSocket, decoded and
//! encoded with the protobuf types of the `livekit-protocol` crate.
//!
//! This module owns the wire: the join URL of both modes (single peer
//! connection at `/rtc/v1` with a `join_request`, dual peer connection at
//! `/rtc` with query parameters) and the binary `SignalRequest` /
//! `SignalResponse` frames. What the messages mean to a room is the media
//! workers' business. See `signaling/LIVEKIT-SURVEY.md` for the protocol as
//! the SDKs speak it.

pub mod frames;
pub mod join;

pub use livekit_protocol as proto;
