//! Feeds arbitrary bytes, as UTF-8 text, to the SFU's own SDP inspection in
//! `sfu::room::offer`: `media_sections`, `check_offer` (WHIP, WHEP, room),
//! `check_room_offer`, `remb_only_video_mids`, `check_answer` and `one_media_stream`. These run
//! on the offer SDP of a WHIP/WHEP POST or a room `offer` message before
//! str0m sees it. The first input byte picks the room offer's grant and
//! track limit; the rest is the SDP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::room::offer::{
    check_answer, check_offer, check_room_offer, media_sections, one_media_stream,
    remb_only_video_mids,
};
use signaling::SessionKind;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let Ok(sdp) = std::str::from_utf8(rest) else {
        return;
    };
    let sections = media_sections(sdp);
    for kind in [SessionKind::Whip, SessionKind::Whep, SessionKind::Room] {
        let result = check_offer(kind, sdp);
        if sections.is_empty() {
            assert!(result.is_err());
        }
    }
    let can_publish = knobs & 0x80 != 0;
    let max_tracks = usize::from(knobs & 0x7f);
    let _ = check_room_offer(sdp, can_publish, max_tracks);
    let mids = remb_only_video_mids(sdp);
    assert!(mids.len() <= sections.len());
    for mid in &mids {
        assert!(sections.iter().any(|s| s.mid.as_ref() == Some(mid)));
    }
    let _ = check_answer(sdp, &["opus".to_string(), "VP8".to_string()]);
    let _ = one_media_stream(sdp);
});
