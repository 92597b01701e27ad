//! Detects video whose frames arrive out of presentation order: H.264 with
//! B-frames. Browsers' WebRTC decoders do not reorder, so such a stream
//! stutters or freezes in every player; OBS users hit this when their encoder
//! profile enables B-frames. The monitor lets the server say so clearly.

/// Watches the RTP timestamps of consecutive frames of one video stream.
#[derive(Debug, Default, Clone)]
pub struct FrameOrderMonitor {
    last: Option<u64>,
    highest_seq: Option<u64>,
    reordered: u64,
    frames: u64,
}

impl FrameOrderMonitor {
    /// Observe a packet: its (extended) sequence number and (unwrapped) RTP
    /// timestamp. Only packets in sequence order count (one the network
    /// reordered, or a repair, says nothing of the encoder), and a frame
    /// counts once. Returns true at the first reordered frame (time to
    /// warn, once).
    pub fn observe_packet(&mut self, seq: u64, rtp_time: u64) -> bool {
        if self.highest_seq.is_some_and(|h| seq <= h) {
            return false;
        }
        self.highest_seq = Some(seq);
        if self.last == Some(rtp_time) {
            return false;
        }
        self.observe(rtp_time)
    }

    /// Observe a frame's (unwrapped) RTP timestamp. Returns true when this
    /// frame is the first reordered one seen (time to warn, once).
    pub fn observe(&mut self, rtp_time: u64) -> bool {
        self.frames += 1;
        let went_back = self.last.is_some_and(|last| rtp_time < last);
        if went_back {
            self.reordered += 1;
        } else {
            self.last = Some(rtp_time);
        }
        went_back && self.reordered == 1
    }

    /// Frames whose timestamp went backwards: each is a B-frame or a reordered frame.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    pub fn has_bframes(&self) -> bool {
        self.reordered > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_only_stream_is_clean() {
        let mut m = FrameOrderMonitor::default();
        for i in 0..100 {
            assert!(!m.observe(i * 3000));
        }
        assert!(!m.has_bframes());
    }

    #[test]
    fn detects_ipbb_decode_order() {
        // Decode order I0 P3 B1 B2 P6 B4 B5: presentation timestamps go back.
        let mut m = FrameOrderMonitor::default();
        let order = [0u64, 3, 1, 2, 6, 4, 5];
        let warnings: Vec<bool> = order.iter().map(|f| m.observe(f * 3000)).collect();
        assert_eq!(
            warnings,
            vec![false, false, true, false, false, false, false]
        );
        assert_eq!(m.reordered(), 4);
        assert!(m.has_bframes());
    }

    #[test]
    fn packets_count_per_frame_and_network_reordering_is_not_a_bframe() {
        let mut m = FrameOrderMonitor::default();
        // Frames of three packets; packet 5 (frame 1) arrives after 7 (frame 2).
        let arrivals = [
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 3000),
            (6, 3000),
            (7, 6000),
            (5, 3000),
        ];
        for (seq, ts) in arrivals {
            assert!(!m.observe_packet(seq, ts));
        }
        assert!(!m.has_bframes());
        // B-frames in sequence order do count.
        assert!(m.observe_packet(8, 4500), "the first reordered frame warns");
        assert_eq!(m.reordered(), 1);
    }
}
