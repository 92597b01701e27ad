//! Unit tests of [`StreamRewriter`]: continuity across switches, gaps,
//! squeezes, reordering, late repairs, wraparound, jumps and VP8 ids.

use super::*;
use str0m::media::{Mid, Rid};

const VIDEO: u32 = 90_000;

fn source(publisher: u64, layer: Option<&str>, ssrc: u32) -> SourceKey {
    SourceKey {
        track: TrackKey {
            publisher,
            mid: Mid::from("0"),
        },
        layer: layer.map(Rid::from),
        ssrc,
    }
}

/// A packet builder: one source, time passed explicitly.
#[derive(Clone, Copy)]
struct Pkt {
    inner: Incoming,
}

impl Pkt {
    fn new(src: SourceKey, seq: u64, ts: u32, at: Instant) -> Pkt {
        Pkt {
            inner: Incoming {
                source: src,
                seq,
                timestamp: ts,
                clock_rate: VIDEO,
                arrival: at,
                sender_clock: None,
                vp8: None,
            },
        }
    }

    fn vp8(mut self, pid: u16, tl0: u8) -> Pkt {
        self.inner.vp8 = Some(Vp8Ids {
            picture_id: Some(pid),
            picture_id_bits: 15,
            tl0_pic_idx: Some(tl0),
        });
        self
    }

    fn sr(mut self, ntp: SystemTime, rtp: u32) -> Pkt {
        self.inner.sender_clock = Some(SenderClock { ntp, rtp });
        self
    }
}

fn fwd(rw: &mut StreamRewriter, p: Pkt) -> Outgoing {
    rw.forward(&p.inner, false).expect("packet is forwarded")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_first_source_passes_through_with_its_16_bit_numbers() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    // An extended number past one wraparound: the stream starts at its low 16 bits.
    let first = fwd(&mut rw, Pkt::new(a, 70_000, 5_000, t0));
    assert_eq!(first.seq, 70_000 & 0xffff);
    assert_eq!(first.timestamp, 5_000);
    let next = fwd(&mut rw, Pkt::new(a, 70_001, 8_000, t0 + ms(33)));
    assert_eq!(next.seq, first.seq + 1);
    assert_eq!(next.timestamp, 8_000);
}

#[test]
fn a_publisher_gap_stays_a_gap_and_its_repair_fills_it() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    assert_eq!(fwd(&mut rw, Pkt::new(a, 100, 0, t0)).seq, 100);
    // 101 and 102 are lost on the way in.
    assert_eq!(fwd(&mut rw, Pkt::new(a, 103, 0, t0)).seq, 103);
    // The repair of 101 arrives late: it goes into its own slot.
    assert_eq!(fwd(&mut rw, Pkt::new(a, 101, 0, t0 + ms(40))).seq, 101);
    assert_eq!(fwd(&mut rw, Pkt::new(a, 104, 3000, t0 + ms(41))).seq, 104);
}

#[test]
fn dropped_packets_are_squeezed_out_of_the_sequence() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    assert_eq!(fwd(&mut rw, Pkt::new(a, 10, 0, t0)).seq, 10);
    rw.skip(&Pkt::new(a, 11, 3000, t0).inner);
    rw.skip(&Pkt::new(a, 12, 3000, t0).inner);
    assert_eq!(fwd(&mut rw, Pkt::new(a, 13, 6000, t0)).seq, 11);
    // A squeeze after a gap keeps the gap: 14 lost, 15 dropped, 16 sent.
    rw.skip(&Pkt::new(a, 15, 9000, t0).inner);
    assert_eq!(fwd(&mut rw, Pkt::new(a, 16, 12000, t0)).seq, 13);
    // 14's repair arrives: the slot left for it (12) is still free.
    assert_eq!(fwd(&mut rw, Pkt::new(a, 14, 9000, t0)).seq, 12);
}

#[test]
fn a_late_packet_takes_the_offset_in_force_where_it_belongs() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    fwd(&mut rw, Pkt::new(a, 1000, 0, t0));
    // 1001 missing; 1002 dropped on purpose; 1003 sent.
    rw.skip(&Pkt::new(a, 1002, 0, t0).inner);
    assert_eq!(fwd(&mut rw, Pkt::new(a, 1003, 0, t0)).seq, 1002);
    // 1001 arrives reordered: before the squeeze, so the old offset.
    assert_eq!(fwd(&mut rw, Pkt::new(a, 1001, 0, t0)).seq, 1001);
}

#[test]
fn a_late_drop_leaves_its_hole() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    fwd(&mut rw, Pkt::new(a, 1, 0, t0));
    fwd(&mut rw, Pkt::new(a, 3, 0, t0));
    // 2 arrives late and is dropped: 3 was already sent as 3.
    rw.skip(&Pkt::new(a, 2, 0, t0).inner);
    assert_eq!(fwd(&mut rw, Pkt::new(a, 4, 0, t0)).seq, 4);
}

#[test]
fn sequence_numbers_continue_across_16_bit_wraparound() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    let mut seqs = vec![];
    for s in 65_530..65_545u64 {
        if s == 65_536 {
            rw.skip(&Pkt::new(a, s, 0, t0).inner);
            continue;
        }
        seqs.push(fwd(&mut rw, Pkt::new(a, s, 0, t0)).seq);
    }
    // Extended outgoing numbers: contiguous through 65535 -> 65536 (ROC 1).
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(seqs[0], 65_530);
    assert!(*seqs.last().expect("sent") > 65_535);
}

#[test]
fn a_layer_switch_continues_numbers_and_time() {
    let t0 = Instant::now();
    let low = source(1, Some("q"), 10);
    let high = source(1, Some("f"), 30);
    let mut rw = StreamRewriter::default();
    let mut last = fwd(&mut rw, Pkt::new(low, 500, 90_000, t0));
    for i in 1..10u64 {
        last = fwd(
            &mut rw,
            Pkt::new(low, 500 + i, 90_000 + 3000 * i as u32, t0 + ms(33 * i)),
        );
    }
    // The high layer's keyframe 40 ms after the last low packet, with
    // unrelated numbering: it continues right after.
    let t1 = t0 + ms(33 * 9 + 40);
    let first = fwd(&mut rw, Pkt::new(high, 40_000, 7_777_777, t1));
    assert_eq!(first.seq, last.seq + 1);
    assert_eq!(first.timestamp, last.timestamp + 3600, "40 ms at 90 kHz");
    let second = fwd(
        &mut rw,
        Pkt::new(high, 40_001, 7_777_777 + 3000, t1 + ms(33)),
    );
    assert_eq!(second.seq, first.seq + 1);
    assert_eq!(second.timestamp, first.timestamp + 3000);
    // A late packet of the low layer, or of the high one from before the
    // switch, cannot be placed.
    assert_eq!(
        rw.forward(&Pkt::new(high, 39_999, 7_777_000, t1).inner, false),
        None
    );
    assert_eq!(rw.dropped_late, 1);
}

#[test]
fn a_switch_aligns_timestamps_from_sender_reports() {
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let low = source(1, Some("q"), 10);
    let high = source(1, Some("f"), 30);
    let mut rw = StreamRewriter::default();
    // Low layer: rtp 1_000_000 at wall; sent as is (first source).
    let last = fwd(&mut rw, Pkt::new(low, 1, 1_000_000, t0).sr(wall, 1_000_000));
    // High layer: its SR says rtp 5_000_000 is wall + 100 ms. Its keyframe
    // was captured 100 ms after the low packet (rtp 5_000_000), but we read
    // it 130 ms after (jitter): the capture time wins.
    let p = Pkt::new(high, 9, 5_000_000, t0 + ms(130)).sr(wall + ms(100), 5_000_000);
    let first = fwd(&mut rw, p);
    assert_eq!(
        first.timestamp,
        last.timestamp + 9_000,
        "100 ms of capture time"
    );
}

#[test]
fn implausible_sender_reports_fall_back_to_the_wall_clock() {
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let low = source(1, Some("q"), 10);
    let high = source(1, Some("f"), 30);
    let mut rw = StreamRewriter::default();
    let last = fwd(&mut rw, Pkt::new(low, 1, 1_000, t0).sr(wall, 1_000));
    // The reports put the new packet 10 s in the past: not believed.
    let p = Pkt::new(high, 9, 50_000, t0 + ms(20)).sr(wall - Duration::from_secs(10), 50_000);
    let first = fwd(&mut rw, p);
    assert_eq!(
        first.timestamp,
        last.timestamp + 1_800,
        "20 ms of wall clock"
    );
}

#[test]
fn a_new_publisher_continues_the_stream() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let b = source(2, None, 99);
    let mut rw = StreamRewriter::default();
    let last = fwd(&mut rw, Pkt::new(a, 7, 123, t0));
    // Even with both reports, different publishers' clocks are not compared.
    let wall = SystemTime::now();
    let first = fwd(&mut rw, Pkt::new(b, 50_000, 9, t0 + ms(500)).sr(wall, 9));
    assert_eq!(first.seq, last.seq + 1);
    assert_eq!(first.timestamp, last.timestamp + 45_000);
}

#[test]
fn an_ssrc_change_is_a_new_source() {
    let t0 = Instant::now();
    let mut rw = StreamRewriter::default();
    let last = fwd(&mut rw, Pkt::new(source(1, None, 10), 400, 1_000, t0));
    let first = fwd(&mut rw, Pkt::new(source(1, None, 11), 3, 77, t0 + ms(10)));
    assert_eq!(first.seq, last.seq + 1);
    assert_eq!(first.timestamp, last.timestamp + 900);
}

#[test]
fn a_sequence_jump_rebases_instead_of_leaving_a_huge_gap() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    let last = fwd(&mut rw, Pkt::new(a, 100, 1000, t0));
    let jumped = fwd(&mut rw, Pkt::new(a, 100 + 20_000, 4000, t0 + ms(33)));
    assert_eq!(jumped.seq, last.seq + 1);
    assert_eq!(rw.jumps, 1);
    // A normal gap is kept.
    let after = fwd(&mut rw, Pkt::new(a, 100 + 20_005, 7000, t0 + ms(66)));
    assert_eq!(after.seq, jumped.seq + 5);
}

#[test]
fn a_timestamp_jump_rebases_time_to_the_wall_clock() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    let last = fwd(&mut rw, Pkt::new(a, 1, 1000, t0));
    // An encoder restart on the same SSRC: time jumps by an hour.
    let p = fwd(&mut rw, Pkt::new(a, 2, 1000 + 3600 * VIDEO, t0 + ms(33)));
    assert_eq!(p.timestamp, last.timestamp + 2_970);
    assert_eq!(p.seq, last.seq + 1);
    // Normal spacing afterwards.
    let q = fwd(
        &mut rw,
        Pkt::new(a, 3, 1000 + 3600 * VIDEO + 3000, t0 + ms(66)),
    );
    assert_eq!(q.timestamp, p.timestamp + 3000);
}

#[test]
fn a_backlogged_reader_is_not_a_timestamp_jump() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    fwd(&mut rw, Pkt::new(a, 1, 0, t0));
    // Ten seconds of media read within 100 ms (a worker catching up).
    let p = fwd(&mut rw, Pkt::new(a, 300, 10 * VIDEO, t0 + ms(100)));
    assert_eq!(p.timestamp, 10 * VIDEO);
    assert_eq!(rw.jumps, 0);
}

#[test]
fn vp8_picture_ids_stay_contiguous_across_temporal_drops() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    // Frames 100 (TL0), 101 (TL1, dropped, two packets), 102 (TL0).
    let f0 = fwd(&mut rw, Pkt::new(a, 1, 0, t0).vp8(100, 7));
    rw.skip(&Pkt::new(a, 2, 3000, t0).vp8(101, 7).inner);
    rw.skip(&Pkt::new(a, 3, 3000, t0).vp8(101, 7).inner);
    let f2 = fwd(&mut rw, Pkt::new(a, 4, 6000, t0).vp8(102, 8));
    let (v0, v2) = (f0.vp8.expect("vp8"), f2.vp8.expect("vp8"));
    assert_eq!(v0.picture_id, Some(100));
    assert_eq!(v2.picture_id, Some(101), "the dropped picture is squeezed");
    assert_eq!(v2.tl0_pic_idx, Some(8));
    assert_eq!(f2.seq, f0.seq + 1);
}

#[test]
fn vp8_ids_continue_across_a_layer_switch_and_wrap() {
    let t0 = Instant::now();
    let low = source(1, Some("q"), 10);
    let high = source(1, Some("f"), 30);
    let mut rw = StreamRewriter::default();
    let last = fwd(&mut rw, Pkt::new(low, 1, 0, t0).vp8(32_767, 255));
    let v = last.vp8.expect("vp8");
    assert_eq!((v.picture_id, v.tl0_pic_idx), (Some(32_767), Some(255)));
    // The high layer's keyframe has unrelated ids: they continue (and wrap).
    let first = fwd(&mut rw, Pkt::new(high, 500, 0, t0 + ms(33)).vp8(9_000, 40));
    let v = first.vp8.expect("vp8");
    assert_eq!((v.picture_id, v.tl0_pic_idx), (Some(0), Some(0)));
    let next = fwd(
        &mut rw,
        Pkt::new(high, 501, 3000, t0 + ms(66)).vp8(9_001, 40),
    );
    assert_eq!(next.vp8.expect("vp8").picture_id, Some(1));
}

#[test]
fn seven_bit_picture_ids_wrap_at_128() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    let mut p = Pkt::new(a, 1, 0, t0).vp8(127, 1);
    if let Some(v) = p.inner.vp8.as_mut() {
        v.picture_id_bits = 7;
    }
    let out = fwd(&mut rw, p);
    assert_eq!(out.vp8.expect("vp8").picture_id, Some(127));
    let mut q = Pkt::new(a, 2, 3000, t0).vp8(0, 2);
    if let Some(v) = q.inner.vp8.as_mut() {
        v.picture_id_bits = 7;
    }
    rw.skip(&q.inner); // picture 0 dropped
    let mut r = Pkt::new(a, 3, 6000, t0).vp8(1, 2);
    if let Some(v) = r.inner.vp8.as_mut() {
        v.picture_id_bits = 7;
    }
    assert_eq!(fwd(&mut rw, r).vp8.expect("vp8").picture_id, Some(0));
}

#[test]
fn skips_of_another_source_change_nothing() {
    let t0 = Instant::now();
    let a = source(1, Some("q"), 10);
    let b = source(1, Some("f"), 30);
    let mut rw = StreamRewriter::default();
    fwd(&mut rw, Pkt::new(a, 1, 0, t0));
    rw.skip(&Pkt::new(b, 2, 0, t0).inner);
    assert_eq!(fwd(&mut rw, Pkt::new(a, 2, 0, t0)).seq, 2);
}

#[test]
fn offset_history_is_bounded() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    let mut seq = 1;
    fwd(&mut rw, Pkt::new(a, seq, 0, t0));
    // Alternate sent and dropped packets far beyond the history.
    for _ in 0..(OFFSET_HISTORY * 4) {
        seq += 1;
        rw.skip(&Pkt::new(a, seq, 0, t0).inner);
        seq += 1;
        fwd(&mut rw, Pkt::new(a, seq, 0, t0));
    }
    let seg = rw.segment.as_ref().expect("segment");
    assert!(seg.offsets.len() <= OFFSET_HISTORY);
    // A packet older than the history kept is dropped, not misplaced.
    assert_eq!(rw.forward(&Pkt::new(a, 2, 0, t0).inner, false), None);
}

#[test]
fn a_fresh_start_on_the_same_source_continues_after_what_was_sent() {
    let t0 = Instant::now();
    let a = source(1, None, 10);
    let mut rw = StreamRewriter::default();
    let last = fwd(&mut rw, Pkt::new(a, 100, 0, t0));
    // Video paused for two seconds (nothing forwarded, nothing skipped),
    // then resumed at a keyframe: no gap of 600 packets to NACK.
    let p = Pkt::new(a, 700, 180_000, t0 + Duration::from_secs(2));
    let resumed = rw.forward(&p.inner, true).expect("forwarded");
    assert_eq!(resumed.seq, last.seq + 1);
    assert_eq!(resumed.timestamp, 180_000, "same clock: time runs on");
}
