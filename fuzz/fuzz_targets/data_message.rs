//! Feeds arbitrary bytes to the data-channel message parser of the room
//! protocol: `serde_json::from_slice::<signaling::room_protocol::DataEnvelope>`,
//! as the SFU applies it to every message a participant sends on its
//! `reliable`/`lossy` data channel, then builds and serializes the
//! `RelayedData` the server would send to the recipients.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::room_protocol::{DataEnvelope, RelayedData};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<DataEnvelope>(data) else {
        return;
    };
    let relayed = RelayedData {
        from: Some("alice".into()),
        topic: envelope.topic.clone(),
        payload: envelope.payload.clone(),
    };
    let out = serde_json::to_vec(&relayed).expect("relayed data serializes");
    let back: RelayedData = serde_json::from_slice(&out).expect("relayed data parses back");
    assert_eq!(back.topic, envelope.topic);
});
