//! Feeds arbitrary bytes, as UTF-8 text, to
//! `signaling::room_protocol::parse_client_message`: a WebSocket text frame
//! of the room protocol (the nodes' bridges on `/rtc`, signaling/PROTOCOL.md). A message that
//! parses is serialized again with serde_json, which must not fail, and the
//! serialized form must parse back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::room_protocol::parse_client_message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = parse_client_message(text) else {
        return;
    };
    let json = serde_json::to_string(&message).expect("a parsed message serializes");
    let again = parse_client_message(&json);
    assert_eq!(again.as_ref(), Ok(&message), "round trip through {json}");
});
