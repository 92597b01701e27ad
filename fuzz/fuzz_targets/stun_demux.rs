//! Feeds arbitrary bytes, as a UDP datagram, to the SFU's datagram
//! demultiplexer in `sfu::worker::demux`: `is_stun`, `stun_username`,
//! `local_ufrag` and `Demux::route`. Every datagram arriving on a media
//! worker's socket goes through `Demux::route` before any `Rtc` sees it.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sfu::worker::demux::{is_stun, local_ufrag, stun_integrity_ok, stun_username, Demux, Route};
use str0m::net::Protocol;

fuzz_target!(|data: &[u8]| {
    let known = SocketAddr::from(([192, 0, 2, 1], 5000));
    let unknown = SocketAddr::from(([192, 0, 2, 2], 6000));
    let mut demux = Demux::default();
    demux.insert_credentials("srvfrag", "srvpassword", 1);
    demux.insert_credentials("other", "otherpassword", 2);
    demux.learn_addr(Protocol::Udp, known, 3);

    let stun = is_stun(data);
    let username = stun_username(data);
    if username.is_some() {
        assert!(stun, "a USERNAME only comes out of a STUN message");
    }
    let ufrag = local_ufrag(data);
    assert_eq!(ufrag.is_some(), username.is_some());

    let expected_by_ufrag = match ufrag {
        Some("srvfrag") => Some((
            Route::Participant(1),
            stun_integrity_ok(data, "srvpassword"),
        )),
        Some("other") => Some((
            Route::Participant(2),
            stun_integrity_ok(data, "otherpassword"),
        )),
        _ => None,
    };
    // The known address is known over UDP only: over TCP it is a stranger.
    for (proto, source, by_addr) in [
        (Protocol::Udp, known, Route::Participant(3)),
        (Protocol::Udp, unknown, Route::Drop),
        (Protocol::Tcp, known, Route::Drop),
    ] {
        let route = demux.route(proto, source, data);
        let expected = match expected_by_ufrag {
            // A known remote is routed by ufrag; a new one only when the
            // request's integrity verifies (then it is learned).
            Some((r, _)) if stun && by_addr == Route::Participant(3) => r,
            Some((r, true)) if stun => r,
            Some((_, false)) if stun => Route::Drop,
            _ if stun || by_addr == Route::Participant(3) => by_addr,
            _ => Route::AskConnecting,
        };
        assert_eq!(route, expected);
    }
});
