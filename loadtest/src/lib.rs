//! Load generator for the SFU (`sfu-loadtest`): virtual participants built
//! on str0m that speak the server's real protocols (WHIP, WHEP), send
//! synthetic media the server cannot tell from an encoder's, and measure
//! what receivers get (one-way delay, loss, layers) together with the
//! server's CPU and memory. Also the raw UDP relay baseline that every
//! figure is compared with.
//!
//! Layout: `stamp` and `source` make the media, `packetize` cuts it into
//! RTP payloads (`vp9`: VP9's payload descriptor, written and read, and
//! the scalability modes; `av1`: AV1's OBUs and payloads, `dd`: its
//! dependency descriptor); `codec` reads payloads, `packets` accounts
//! packets and frames, `receive` measures (all sans-IO); `peer` is the
//! str0m shell in RTP mode, `publish` its sending side; `signal` and
//! `session` the WHIP/WHEP signaling, `livekit_signal` and `room` a room
//! member over LiveKit's client signalling, `subscribe` which tracks it
//! takes; `run` and the scenario modules drive a whole test; `report` and
//! `process` turn it into figures.

pub mod av1;
pub mod broadcast;
pub mod capacity;
pub mod churn;
pub mod cluster;
pub mod codec;
pub mod dd;
pub mod livekit_signal;
pub mod meeting;
pub mod packetize;
pub mod packets;
pub mod peer;
pub mod process;
pub mod publish;
pub mod receive;
pub mod relay;
pub mod report;
pub mod room;
pub mod run;
pub mod session;
pub mod signal;
pub mod soak;
pub mod socket_drops;
pub mod source;
pub mod stamp;
pub mod subscribe;
pub mod vp9;
