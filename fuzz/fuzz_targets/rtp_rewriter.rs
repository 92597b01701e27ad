//! Drives `sfu::forward::rewriter::StreamRewriter` (the header rewriting of
//! one outgoing stream) with arbitrary packet sequences: sources switching,
//! sequence numbers and timestamps jumping, reordering, repeats of the
//! picture ids, purposeful drops and fresh starts, time moving unevenly.
//! Each input packet is 8 bytes: op, source, sequence step (i16), timestamp
//! step (i16), picture id step, time step. Checked: no panic, and no two
//! forwarded packets share an outgoing sequence number (a subscriber would
//! discard one of them as a duplicate).
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use sfu::forward::rewriter::{Incoming, SenderClock, SourceKey, StreamRewriter, Vp8Ids};
use sfu::forward::router::TrackKey;
use str0m::media::{Mid, Rid};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut rw = StreamRewriter::default();
    // Per source: next sequence number, timestamp, picture id.
    let mut state = [(1_000u64, 0u32, 0u16); 4];
    let mut seen: HashSet<(usize, u64)> = HashSet::new();
    let mut sent: HashSet<u64> = HashSet::new();
    let mut now = t0;
    for op in data.chunks_exact(8) {
        let src = usize::from(op[1] % 4);
        let seq_step = i64::from(i16::from_le_bytes([op[2], op[3]]));
        let ts_step = i32::from(i16::from_le_bytes([op[4], op[5]])) * 30;
        now += Duration::from_millis(u64::from(op[7] % 64));
        let (seq, ts, pid) = &mut state[src];
        *seq = seq.saturating_add_signed(seq_step).max(1);
        *ts = ts.wrapping_add(ts_step as u32);
        *pid = pid.wrapping_add(u16::from(op[6] % 3)) % (1 << 15);
        if !seen.insert((src, *seq)) {
            continue; // str0m drops duplicates before they reach the rewriter
        }
        let p = Incoming {
            source: SourceKey {
                track: TrackKey {
                    publisher: (src / 2) as u64,
                    mid: Mid::from("0"),
                },
                layer: Some(Rid::from(["q", "f"][src % 2])),
                ssrc: src as u32,
            },
            seq: *seq,
            timestamp: *ts,
            clock_rate: 90_000,
            arrival: now,
            sender_clock: (op[0] & 0x10 != 0).then_some(SenderClock {
                ntp: wall + Duration::from_millis(u64::from(op[7])),
                rtp: ts.wrapping_sub(u32::from(op[6]) * 90),
            }),
            vp8: (op[0] & 0x20 != 0).then_some(Vp8Ids {
                picture_id: Some(*pid),
                picture_id_bits: if op[0] & 0x40 != 0 { 7 } else { 15 },
                tl0_pic_idx: Some(op[6]),
            }),
        };
        match op[0] % 4 {
            0 => rw.skip(&p),
            kind => {
                if let Some(out) = rw.forward(&p, kind == 3) {
                    assert!(sent.insert(out.seq), "outgoing sequence number {} sent twice", out.seq);
                    if let (Some(ids), Some(out_ids)) = (p.vp8, out.vp8) {
                        let m = if ids.picture_id_bits == 7 { 128 } else { 1 << 15 };
                        assert!(out_ids.picture_id.is_none_or(|pid| pid < m));
                    }
                }
            }
        }
    }
});
