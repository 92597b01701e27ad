//! LiveKit's client signalling: what the official LiveKit SDKs send and
//! expect on their signal WebSocket, decoded and encoded with the protobuf
//! types of the `livekit-protocol` crate, and translated to and from the
//! room's own messages so that LiveKit clients meet in the same rooms as
//! everyone else (WHIP publishers, WHEP viewers, other nodes' bridges).
//!
//! - [`join`]: the join URL of both modes (single peer connection at
//!   `/rtc/v1` with a `join_request`, dual at `/rtc` with query parameters);
//! - [`frames`]: the binary `SignalRequest` / `SignalResponse` frames;
//! - [`session`]: one client's session, sans-IO (requests -> room
//!   messages, room messages -> responses), with [`slots`] placing remote
//!   tracks on the client's receive sections and [`sdp`] reading its offers
//!   and naming tracks in the answers;
//! - [`socket`]: the WebSocket and validate endpoints around a session;
//!   [`registry`] keeps sessions for a client that resumes on a new socket.
//!
//! Served: single peer connection signalling. See
//! `signaling/LIVEKIT-SURVEY.md` for the protocol as the SDKs speak it.

pub mod convert;
pub mod frames;
pub mod join;
pub mod registry;
pub mod sdp;
pub mod session;
pub mod slots;
pub mod socket;

pub use livekit_protocol as proto;
