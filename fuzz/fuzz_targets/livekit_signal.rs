//! Feeds arbitrary bytes to the LiveKit signalling decoders: the first byte
//! picks the decoder, the rest is its input. Even: a binary `SignalRequest`
//! frame (`signaling::livekit::frames::decode_request`); a request that
//! decodes must encode again and decode to the same message. Odd: the
//! `join_request` query value of the single-PC mode
//! (`signaling::livekit::join::decode_join_request`: base64url, optional
//! gzip bounded in size, protobuf). Neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::livekit::{frames, join, proto};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let Ok(message) = frames::decode_request(input) else {
            return;
        };
        let again = prost::Message::encode_to_vec(&proto::SignalRequest {
            message: Some(message.clone()),
        });
        assert_eq!(frames::decode_request(&again), Ok(message));
    } else if let Ok(text) = std::str::from_utf8(input) {
        let _ = join::decode_join_request(text);
    }
});
