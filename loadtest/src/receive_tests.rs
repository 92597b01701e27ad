//! Unit tests of `receive`: frame loss and recovery per layer (and, for
//! layered streams, skipped frames apart from lost ones), delay by kind,
//! the steady window, first keyframes, and packets made into frames.

use super::*;

fn stamp(layer: u8, seq: u64, sent_us: u64) -> Option<Stamp> {
    Some(Stamp {
        layer,
        seq,
        sent_us,
    })
}

#[test]
fn gaps_in_a_layer_count_as_loss_and_switches_do_not() {
    let mut r = ReceiveStats::default();
    let t = Duration::ZERO;
    for seq in [0, 1, 2, 5, 6] {
        r.on_frame(Frame::video(1, 100, false), stamp(2, seq, 0), t, 1000);
    }
    assert_eq!(r.lost_of(Kind::Video), 2);
    assert_eq!(r.video_lost_by_second, vec![2], "counted in second 0");
    // Switch to layer 0 whose numbering is elsewhere: no loss.
    r.on_frame(Frame::video(1, 100, false), stamp(0, 900, 0), t, 1000);
    r.on_frame(Frame::video(1, 100, false), stamp(0, 901, 0), t, 1000);
    // A duplicate or late frame is not a loss either.
    r.on_frame(Frame::video(1, 100, false), stamp(0, 900, 0), t, 1000);
    assert_eq!(r.lost_of(Kind::Video), 2);
    assert_eq!(r.current_layer, Some(0));
    assert_eq!(r.layer_frames[2], 5);
    // Audio is counted on its own.
    r.on_frame(Frame::audio(0, 120), stamp(0, 0, 0), t, 1000);
    r.on_frame(Frame::audio(0, 120), stamp(0, 3, 0), t, 1000);
    assert_eq!(r.lost_of(Kind::Audio), 2);
}

#[test]
fn keyframes_and_other_video_frames_are_told_apart() {
    let mut r = ReceiveStats::default();
    let t = Duration::ZERO;
    // Audio 1 ms, video delta frames 5 ms, keyframes 80 ms.
    r.on_frame(Frame::audio(0, 120), stamp(0, 0, 0), t, 1_000);
    for seq in 0..10 {
        let key = seq % 5 == 0;
        let delay = if key { 80_000 } else { 5_000 };
        let sent = seq * 33_000;
        let frame = Frame::video(1, 1000, key);
        r.on_frame(frame, stamp(2, seq, sent), t, sent + delay);
    }
    assert_eq!(r.keyframe_delay_us.len(), 2);
    assert!(r.keyframe_delay_us.min() >= 79_000);
    let video = r.video_delay_us();
    assert_eq!(video.len(), 10, "the audio frame is not video");
    let delta = r.delta_frame_delay_us();
    assert_eq!(delta.len(), 8);
    assert!((4_990..=5_010).contains(&delta.max()), "{}", delta.max());
}

#[test]
fn the_steady_window_counts_only_its_frames() {
    let mut r = ReceiveStats::default();
    let t = Duration::ZERO;
    // Frames 0-4 during the joins (slow, one lost); 5-9 steady (one lost).
    for seq in [0, 1, 3, 4] {
        r.on_frame(Frame::audio(0, 120), stamp(0, seq, 0), t, 900_000);
    }
    for seq in [5, 6, 8, 9] {
        let frame = Frame {
            steady: true,
            ..Frame::audio(0, 120)
        };
        r.on_frame(frame, stamp(0, seq, 0), t, 2_000);
    }
    assert_eq!(r.lost_of(Kind::Audio), 2);
    assert_eq!((r.steady_frames, r.steady_lost), (4, 1));
    assert_eq!(r.steady_delay_us.len(), 4);
    assert!(r.steady_delay_us.max() < 2_100, "only the steady delays");
}

#[test]
fn delay_is_receive_time_minus_send_time() {
    let mut r = ReceiveStats::default();
    r.on_frame(
        Frame::audio(0, 120),
        stamp(0, 0, 10_000),
        Duration::ZERO,
        12_500,
    );
    assert_eq!(r.delay_us.len(), 1);
    assert!((2_490..=2_510).contains(&r.delay_us.value_at_quantile(0.5)));
    r.on_frame(Frame::audio(0, 120), None, Duration::ZERO, 0);
    assert_eq!(r.unstamped, 1);
}

#[test]
fn a_frame_completed_after_a_newer_one_is_not_lost() {
    let mut r = ReceiveStats::default();
    let t = Duration::ZERO;
    for seq in [0, 1, 3, 2, 4] {
        r.on_frame(Frame::video(1, 100, false), stamp(1, seq, 0), t, 1000);
    }
    assert_eq!(r.lost_of(Kind::Video), 0);
    assert_eq!(r.frames_of(Kind::Video), 5);
    // Older than the first frame counted: it was never counted lost.
    r.on_frame(Frame::video(2, 100, false), stamp(1, 10, 0), t, 1000);
    r.on_frame(Frame::video(2, 100, false), stamp(1, 9, 0), t, 1000);
    assert_eq!(r.lost_of(Kind::Video), 0);
}

#[test]
fn the_first_keyframe_is_timed_per_video_line_from_its_offer() {
    let mut r = ReceiveStats::default();
    r.video_line_offered(1, Duration::ZERO);
    r.video_line_offered(3, Duration::from_millis(500));
    r.video_line_offered(4, Duration::from_millis(600));
    let at = |ms| Duration::from_millis(ms);
    // Line 1: delta frames first, its keyframe at 120 ms.
    r.on_frame(Frame::video(1, 100, false), stamp(2, 0, 0), at(80), 0);
    r.on_frame(Frame::video(1, 100, true), stamp(2, 1, 0), at(120), 0);
    r.on_frame(Frame::video(1, 100, true), stamp(2, 2, 0), at(3120), 0);
    // Line 3: offered at 500 ms, keyframe (unstamped) at 700 ms.
    r.on_frame(Frame::video(3, 100, true), None, at(700), 0);
    assert_eq!(r.first_keyframe.get(&1), Some(&at(120)));
    assert_eq!(r.first_keyframe.get(&3), Some(&at(200)));
    // Line 4 never got one; line 1 began with a delta frame.
    assert_eq!(r.video_lines_without_keyframe(), 1);
    assert_eq!(r.lines_started_on_delta(), 1);
}

#[test]
fn a_layered_stream_counts_skipped_frames_apart_from_lost_ones() {
    let mut r = ReceiveStats::default();
    let t = Duration::ZERO;
    let frame = |packets_lost| Frame {
        layered: Some(Layered {
            temporal: 2,
            packets_lost,
            ends_picture: true,
        }),
        ..Frame::video(1, 500, false)
    };
    // Spatial layer 2, temporal layer 2: frames 0, 1; then 2-4 skipped
    // by the server (no hole in the RTP sequence): not lost.
    for seq in [0, 1, 5] {
        r.on_frame(frame(0), stamp(2, seq, 1_000 * seq), t, 1_000 * seq);
    }
    assert_eq!(r.lost_of(Kind::Video), 0);
    // Frame 6 missing with packets missing too: lost.
    r.on_frame(frame(3), stamp(2, 7, 7_000), t, 7_000);
    assert_eq!(r.lost_of(Kind::Video), 1);
    // Other layers count on their own numbers.
    r.on_frame(frame(3), stamp(0, 40, 7_000), t, 7_000);
    r.on_frame(frame(3), stamp(1, 90, 7_000), t, 7_000);
    assert_eq!(r.lost_of(Kind::Video), 1);
    assert_eq!(r.layer_frames[..3], [1, 1, 4]);
}

#[test]
fn a_layered_receiver_is_on_the_layer_that_ends_its_pictures() {
    let mut r = ReceiveStats::default();
    let t = Duration::ZERO;
    let frame = |ends_picture| Frame {
        layered: Some(Layered {
            temporal: 0,
            packets_lost: 0,
            ends_picture,
        }),
        ..Frame::video(1, 500, false)
    };
    // All three layers, the marker on the top one's last packet.
    for sid in 0..3 {
        r.on_frame(frame(sid == 2), stamp(sid, 0, 100), t, 1_000);
    }
    assert_eq!(r.current_layer, Some(2));
    // The run ends inside the next picture: its base layer alone says
    // nothing about the layers this receiver gets.
    r.on_frame(frame(false), stamp(0, 1, 150), t, 1_000);
    assert_eq!(r.current_layer, Some(2));
    // Held to two layers, the marker comes on layer 1.
    r.on_frame(frame(false), stamp(0, 2, 200), t, 1_000);
    r.on_frame(frame(true), stamp(1, 2, 200), t, 1_000);
    assert_eq!(r.current_layer, Some(1));
}

#[test]
fn packets_make_frames_and_count_their_losses() {
    use crate::packetize::{vp8, Vp8Numbering, MAX_PAYLOAD};
    use crate::stamp::{video_frame, VideoCodec};
    let mut r = ReceiveStats::default();
    let meta = StreamMeta {
        kind: Kind::Video,
        stream: 1,
        format: PayloadFormat::Vp8,
    };
    let mut n = Vp8Numbering::seeded(1);
    let mut seq = 0u16;
    let mut frames = vec![];
    // Three frames of three packets; the second frame's middle packet is lost.
    for f in 0..3u64 {
        let s = Stamp {
            layer: 0,
            seq: f,
            sent_us: f * 33_000,
        };
        let data = video_frame(VideoCodec::Vp8, f == 0, 320, 180, 3000, s);
        let payloads = vp8(&data, &mut n, MAX_PAYLOAD);
        let last = payloads.len() - 1;
        for (i, p) in payloads.iter().enumerate() {
            seq += 1;
            if f == 1 && i == 1 {
                continue;
            }
            let packet = PacketIn {
                seq,
                rtp_time: f as u32 * 3000,
                marker: i == last,
                payload: p,
                dd: None,
            };
            frames.extend(r.on_packet(7, || Some(meta), &packet, s.sent_us + 4_000));
        }
    }
    assert_eq!(frames.len(), 2);
    for (frame, stamp) in frames {
        r.on_frame(
            frame,
            stamp,
            Duration::ZERO,
            stamp.map_or(0, |s| s.sent_us + 4_000),
        );
    }
    assert_eq!((r.frames_of(Kind::Video), r.lost_of(Kind::Video)), (2, 1));
    assert_eq!(
        (r.packets_of(Kind::Video), r.packets_lost_of(Kind::Video)),
        (8, 1)
    );
    assert_eq!(r.packets_of(Kind::Audio), 0);
    assert_eq!(r.keyframe_delay_us.len(), 1);
    // A stream nobody can name is not counted.
    let p = PacketIn {
        seq: 1,
        rtp_time: 0,
        marker: true,
        payload: &[0x10, 0],
        dd: None,
    };
    assert!(r.on_packet(8, || None, &p, 0).is_none());
    assert_eq!(r.packets_of(Kind::Video), 8);
}
