//! Header rewriting for one outgoing RTP stream (a subscriber's media line,
//! or one stream of a relay's line): the subscriber sees one continuous
//! stream while its source changes underneath (simulcast layer switches, a
//! new publisher in a room a WHEP viewer follows, an encoder restart).
//!
//! A [`StreamRewriter`] owns, for its stream:
//! - **sequence numbers**: outgoing = incoming minus an offset, so a gap in
//!   the publisher's stream stays a gap (the subscriber NACKs it and a
//!   repair that arrives later is forwarded into the right slot). Packets
//!   the forwarding core drops on purpose (a temporal layer, padding) are
//!   squeezed out: the offset grows by one, so no hole is left for the
//!   subscriber to wait for. Offsets are kept per range of incoming numbers,
//!   so a late repair gets the offset that was in force where it belongs;
//! - **timestamps**: outgoing = incoming minus an offset, re-based at every
//!   source change: from the sender reports of both layers when they share a
//!   clock (the same publisher's simulcast layers), else from the wall-clock
//!   time since the last packet sent;
//! - **VP8 picture ids and TL0PICIDX**, continuous across switches and
//!   across frames dropped from higher temporal layers.
//!
//! A source is a publisher's track, layer and SSRC: an SSRC that changes
//! mid-stream is a new source. Sequence jumps of more than
//! [`MAX_SEQ_JUMP`] and timestamp jumps that disagree with the wall clock by
//! more than [`MAX_TS_SKEW`] re-base the stream as a source change would.
//!
//! Plain data with time passed in; no IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

pub use super::codec::Vp8Ids;
use super::layers::LayerId;
use super::router::TrackKey;

/// A sequence-number jump (either way) beyond which the stream is re-based
/// instead of leaving a gap the subscriber would try to NACK.
pub const MAX_SEQ_JUMP: u64 = 3_000;

/// A timestamp step that disagrees with the wall clock by more than this
/// re-bases the timeline (an encoder restarted without a new SSRC). Large,
/// because a worker that falls behind its socket reads packets bunched up.
pub const MAX_TS_SKEW: Duration = Duration::from_secs(30);

/// Offset ranges kept for late packets (repairs, reordering): one per
/// squeezed packet or re-base, so this bounds memory, not time.
const OFFSET_HISTORY: usize = 256;

/// Where a packet comes from. A change of any part is a source change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub track: TrackKey,
    pub layer: LayerId,
    pub ssrc: u32,
}

/// A sender report's mapping of an RTP timestamp to the sender's NTP clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    pub ntp: SystemTime,
    pub rtp: u32,
}

/// Width of a picture id field: 7 or 15 bits.
fn pid_modulus(ids: &Vp8Ids) -> u16 {
    if ids.picture_id_bits == 7 {
        1 << 7
    } else {
        1 << 15
    }
}

/// One incoming packet as the rewriter needs it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming {
    pub source: SourceKey,
    /// Extended sequence number (no wraparound).
    pub seq: u64,
    pub timestamp: u32,
    pub clock_rate: u32,
    /// When the packet was received.
    pub arrival: Instant,
    /// The source's latest sender report, if any arrived.
    pub sender_clock: Option<SenderClock>,
    pub vp8: Option<Vp8Ids>,
}

/// The rewritten header fields of a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// Extended outgoing sequence number.
    pub seq: u64,
    pub timestamp: u32,
    /// Rewritten VP8 ids (present where the incoming descriptor had them).
    pub vp8: Option<Vp8Ids>,
}

#[derive(Debug, Clone)]
struct Segment {
    source: SourceKey,
    /// Packets of the source below this are from before the switch: dropped.
    first_in_seq: u64,
    highest_in_seq: u64,
    /// `(first incoming seq, offset)`, ascending: outgoing = incoming - offset
    /// for incoming numbers from `first` up to the next entry's.
    offsets: VecDeque<(u64, u64)>,
    /// Outgoing = incoming - ts_offset (wrapping).
    ts_offset: u32,
    /// Highest incoming timestamp of the segment and when it arrived.
    highest_ts: (u32, Instant),
    sender_clock: Option<SenderClock>,
    clock_rate: u32,
    /// Outgoing = incoming - offset, modulo the picture id width.
    pid_offset: u16,
    highest_in_pid: Option<u16>,
    tl0_offset: u8,
}

impl Segment {
    fn offset_for(&self, seq: u64) -> Option<u64> {
        if seq < self.first_in_seq {
            return None;
        }
        self.offsets
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .map(|(_, off)| *off)
    }

    fn current_offset(&self) -> u64 {
        self.offsets.back().map_or(0, |(_, off)| *off)
    }

    fn push_offset(&mut self, from: u64, offset: u64) {
        if self.offsets.len() >= OFFSET_HISTORY {
            self.offsets.pop_front();
            if let Some((first, _)) = self.offsets.front() {
                self.first_in_seq = *first;
            }
        }
        self.offsets.push_back((from, offset));
    }
}

/// The last packet sent on the stream, which the next source continues.
#[derive(Debug, Clone, Copy)]
struct LastOut {
    seq: u64,
    timestamp: u32,
    at: Instant,
    clock_rate: u32,
    picture_id: Option<(u16, u16)>,
    tl0_pic_idx: Option<u8>,
}

/// Rewrites the headers of one outgoing stream; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct StreamRewriter {
    segment: Option<Segment>,
    last_out: Option<LastOut>,
    /// Packets dropped because they belonged before a switch or were too
    /// late to place.
    pub dropped_late: u64,
    /// Re-bases caused by sequence or timestamp jumps.
    pub jumps: u64,
}

impl StreamRewriter {
    /// The source whose packets flow now.
    pub fn source(&self) -> Option<SourceKey> {
        self.segment.as_ref().map(|s| s.source)
    }

    /// A packet to forward: its outgoing header fields, or None when it
    /// cannot be placed (from before the current source took over, or
    /// older than the offsets kept). `fresh`: the stream starts over here
    /// (a layer switch, video resumed after a pause), even from the same
    /// source: numbering continues right after the last packet sent.
    pub fn forward(&mut self, p: &Incoming, fresh: bool) -> Option<Outgoing> {
        let continues = self.segment.as_ref().is_some_and(|s| s.source == p.source);
        if !continues || fresh {
            self.start_segment(p, false);
        } else if self.jumped(p) {
            self.jumps += 1;
            self.start_segment(p, true);
        }
        let seg = self.segment.as_mut()?;
        let Some(offset) = seg.offset_for(p.seq) else {
            self.dropped_late += 1;
            return None;
        };
        let seq = p.seq.wrapping_sub(offset);
        if p.seq > seg.highest_in_seq {
            seg.highest_in_seq = p.seq;
        }
        if ts_ahead(p.timestamp, seg.highest_ts.0) {
            seg.highest_ts = (p.timestamp, p.arrival);
        }
        if p.sender_clock.is_some() {
            seg.sender_clock = p.sender_clock;
        }
        let timestamp = p.timestamp.wrapping_sub(seg.ts_offset);
        let vp8 = p.vp8.map(|ids| {
            let m = pid_modulus(&ids);
            let picture_id = ids.picture_id.map(|pid| {
                if seg
                    .highest_in_pid
                    .is_none_or(|h| pid_ahead(pid % m, h % m, m))
                {
                    seg.highest_in_pid = Some(pid % m);
                }
                (pid % m + m - seg.pid_offset % m) % m
            });
            Vp8Ids {
                picture_id,
                picture_id_bits: ids.picture_id_bits,
                tl0_pic_idx: ids.tl0_pic_idx.map(|t| t.wrapping_sub(seg.tl0_offset)),
            }
        });
        let newest = self.last_out.is_none_or(|l| seq > l.seq);
        if newest {
            let prev = self.last_out;
            self.last_out = Some(LastOut {
                seq,
                timestamp,
                at: p.arrival,
                clock_rate: p.clock_rate,
                picture_id: vp8
                    .and_then(|v| v.picture_id.map(|pid| (pid, pid_modulus(&v))))
                    .or(prev.and_then(|l| l.picture_id)),
                tl0_pic_idx: vp8
                    .and_then(|v| v.tl0_pic_idx)
                    .or(prev.and_then(|l| l.tl0_pic_idx)),
            });
        }
        Some(Outgoing {
            seq,
            timestamp,
            vp8,
        })
    }

    /// A packet of the current source that is not forwarded on purpose (a
    /// dropped temporal layer, padding): squeezed out of the outgoing
    /// sequence (and its picture out of the picture ids) so the subscriber
    /// sees no gap. Packets of other sources are none of this stream's
    /// business. A late one (below packets already sent) leaves its hole.
    pub fn skip(&mut self, p: &Incoming) {
        let Some(seg) = self.segment.as_mut().filter(|s| s.source == p.source) else {
            return;
        };
        if p.seq > seg.highest_in_seq && p.seq - seg.highest_in_seq <= MAX_SEQ_JUMP {
            let offset = seg.current_offset().wrapping_add(1);
            seg.highest_in_seq = p.seq;
            seg.push_offset(p.seq + 1, offset);
        }
        if let Some((ids, pid)) = p.vp8.and_then(|v| v.picture_id.map(|pid| (v, pid))) {
            let m = pid_modulus(&ids);
            let pid = pid % m;
            if seg.highest_in_pid.is_some_and(|h| pid_ahead(pid, h % m, m)) {
                seg.highest_in_pid = Some(pid);
                seg.pid_offset = (seg.pid_offset % m + 1) % m;
            }
        }
    }

    /// Whether `p`, of the current source, jumped so far from what came
    /// before that the stream must be re-based.
    fn jumped(&self, p: &Incoming) -> bool {
        let Some(seg) = self.segment.as_ref() else {
            return false;
        };
        if p.seq.abs_diff(seg.highest_in_seq) > MAX_SEQ_JUMP {
            return true;
        }
        let (ts, at) = seg.highest_ts;
        let ticks = i64::from(p.timestamp.wrapping_sub(ts) as i32);
        let wall = signed_micros(p.arrival, at);
        let skew_us = ticks * 1_000_000 / i64::from(p.clock_rate.max(1)) - wall;
        skew_us.unsigned_abs() > MAX_TS_SKEW.as_micros() as u64
    }

    /// `p` starts a new segment: a new source, or a jump (`rebase`) in the
    /// current one. Its numbers continue right after the last packet sent.
    fn start_segment(&mut self, p: &Incoming, rebase: bool) {
        let previous = self.segment.take();
        let seq_offset = match self.last_out {
            Some(last) => p.seq.wrapping_sub(last.seq.wrapping_add(1)),
            // The first source: the stream starts at its 16-bit number.
            None => p.seq - (p.seq & 0xffff),
        };
        let ts_offset = match self.last_out {
            None => 0,
            Some(last) => {
                let aligned = previous
                    .as_ref()
                    .filter(|prev| !rebase && prev.source.track == p.source.track)
                    .and_then(|prev| aligned_timestamp(prev, p));
                let out = aligned
                    .filter(|ts| plausible_after(*ts, &last, p))
                    .unwrap_or_else(|| wall_clock_after(&last, p));
                p.timestamp.wrapping_sub(out)
            }
        };
        let (pid_offset, tl0_offset) = match (p.vp8, self.last_out) {
            (Some(ids), Some(last)) => {
                let m = pid_modulus(&ids);
                let pid_offset = match (ids.picture_id, last.picture_id) {
                    (Some(pid), Some((last_pid, _))) => {
                        let next = (last_pid % m + 1) % m;
                        (pid % m + m - next) % m
                    }
                    _ => 0,
                };
                let tl0_offset = match (ids.tl0_pic_idx, last.tl0_pic_idx) {
                    (Some(tl0), Some(last_tl0)) => tl0.wrapping_sub(last_tl0.wrapping_add(1)),
                    _ => 0,
                };
                (pid_offset, tl0_offset)
            }
            _ => (0, 0),
        };
        let mut offsets = VecDeque::with_capacity(4);
        offsets.push_back((p.seq, seq_offset));
        self.segment = Some(Segment {
            source: p.source,
            first_in_seq: p.seq,
            highest_in_seq: p.seq,
            offsets,
            ts_offset,
            highest_ts: (p.timestamp, p.arrival),
            sender_clock: p.sender_clock,
            clock_rate: p.clock_rate,
            pid_offset,
            highest_in_pid: p
                .vp8
                .and_then(|v| v.picture_id.map(|pid| pid % pid_modulus(&v))),
            tl0_offset,
        });
    }
}

/// The outgoing timestamp of `p` on the previous segment's timeline, from
/// both sources' sender reports (the same clock: one publisher's layers).
fn aligned_timestamp(prev: &Segment, p: &Incoming) -> Option<u32> {
    let (old, new) = (prev.sender_clock?, p.sender_clock?);
    let rate = i64::from(p.clock_rate.max(1));
    if prev.clock_rate != p.clock_rate {
        return None;
    }
    // When p was captured, on the sender's clock.
    let since_new_sr = i64::from(p.timestamp.wrapping_sub(new.rtp) as i32);
    let new_sr_to_old_sr = match new.ntp.duration_since(old.ntp) {
        Ok(d) => i64::try_from(d.as_micros()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_micros()).ok()?,
    };
    // Ticks from the old report to p's capture.
    let ticks = since_new_sr + new_sr_to_old_sr * rate / 1_000_000;
    let in_old = old.rtp.wrapping_add(ticks as i32 as u32);
    Some(in_old.wrapping_sub(prev.ts_offset))
}

/// A re-based timestamp must come after the last one sent, and not further
/// ahead than the wall clock says (plus a margin for jitter).
fn plausible_after(ts: u32, last: &LastOut, p: &Incoming) -> bool {
    let step = i64::from(ts.wrapping_sub(last.timestamp) as i32);
    let wall_ticks = signed_micros(p.arrival, last.at) * i64::from(p.clock_rate) / 1_000_000;
    let margin = i64::from(p.clock_rate) / 2;
    step > 0 && step <= wall_ticks.max(0) + margin
}

/// The last timestamp sent, advanced by the wall-clock time since (at
/// least one tick: time never stands still or goes back).
fn wall_clock_after(last: &LastOut, p: &Incoming) -> u32 {
    let micros = p.arrival.saturating_duration_since(last.at).as_micros() as u64;
    let rate = if last.clock_rate == p.clock_rate {
        u64::from(p.clock_rate)
    } else {
        u64::from(last.clock_rate)
    };
    let ticks = (micros * rate / 1_000_000).max(1);
    last.timestamp.wrapping_add(ticks as u32)
}

fn signed_micros(a: Instant, b: Instant) -> i64 {
    if a >= b {
        a.duration_since(b).as_micros() as i64
    } else {
        -(b.duration_since(a).as_micros() as i64)
    }
}

/// `a` is after `b` on the 32-bit RTP clock.
fn ts_ahead(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

/// `a` is after `b` among picture ids modulo `m`.
fn pid_ahead(a: u16, b: u16, m: u16) -> bool {
    a != b && (a + m - b) % m < m / 2
}

#[cfg(test)]
#[path = "rewriter_tests.rs"]
mod tests;
