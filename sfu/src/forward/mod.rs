//! The sans-IO forwarding core: which subscriber gets which publisher's
//! media, which payload type it is written with, when a publisher is asked
//! for a keyframe, who is speaking, and what is wrong with a publisher's
//! stream.
//!
//! Everything here is plain data with time passed in; no sockets, threads or
//! tokio. The worker executes the decisions these types return.

pub mod bitstream;
pub mod codec;
pub mod descriptor_rewriter;
pub mod freshness;
pub mod gaps;
pub mod keyframe;
pub mod layers;
pub mod payload_map;
pub mod probe;
pub mod red;
pub mod relay_gate;
pub mod reorder;
pub mod rewriter;
pub mod router;
pub mod speakers;

/// Identifies a participant (one `Rtc`) within a worker.
pub type ParticipantId = u64;
