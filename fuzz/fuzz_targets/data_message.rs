//! Feeds arbitrary bytes to the data-channel message decoder as the SFU
//! applies it to every message a member sends
//! (`sfu::room::data_packets::decode`): the first byte picks the channel
//! label — the room protocol's `reliable` (JSON envelopes) or LiveKit's
//! `_reliable` (`DataPacket` protobufs) — the rest is the message. A
//! message that decodes is encoded for members of both dialects, and the
//! relayed form must survive the JSON that carries it between nodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::room::data_packets::{decode, encode, Delivery, Dialect, Sender};
use signaling::room_protocol::RelayedData;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let label = if selector % 2 == 0 { "reliable" } else { "_reliable" };
    let sender = Sender {
        sid: "PA_alice",
        identity: "alice",
    };
    let Ok(incoming) = decode(label, message, &sender) else {
        return;
    };
    assert_eq!(incoming.message.from.as_deref(), Some("alice"));
    for dialect in [Dialect::Json, Dialect::LiveKit] {
        let _ = encode(&incoming.message, dialect, Delivery::Reliable);
    }
    let out = serde_json::to_vec(&incoming.message).expect("relayed data serializes");
    let back: RelayedData = serde_json::from_slice(&out).expect("relayed data parses back");
    assert_eq!(back.packet, incoming.message.packet);
    assert_eq!(back.topic, incoming.message.topic);
});
