//! Feeds arbitrary bytes, as UTF-8 text, to `signaling::sdpfrag::SdpFrag::parse`:
//! the `application/trickle-ice-sdpfrag` body of a WHIP/WHEP PATCH (trickle
//! ICE candidates and ICE restarts, RFC 8840). The handler rejects bodies
//! that are not UTF-8 before parsing, so only UTF-8 input reaches the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::sdpfrag::{SdpFrag, MAX_CANDIDATES};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frag) = SdpFrag::parse(body) {
        assert!(frag.candidates.len() <= MAX_CANDIDATES);
        assert_eq!(frag.ice_ufrag.is_some(), frag.ice_pwd.is_some());
        assert!(frag.candidates.iter().all(|c| c.starts_with("candidate:")));
    }
});
