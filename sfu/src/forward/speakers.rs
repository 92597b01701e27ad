//! Active speaker detection for one room from the RFC 6464 audio levels
//! publishers put on their audio packets (sans-IO, time passed in).
//!
//! Each speaker's loudness is smoothed with an exponential moving average
//! whose weight follows elapsed time, so gaps (DTX, mute) decay it. A
//! participant becomes a speaker above [`ENTER`] and stops below [`EXIT`]
//! (hysteresis), and stays for at least [`HOLD`], so a short breath does
//! not make the speaker list flicker. [`ActiveSpeakers::poll`] reports the
//! list when its membership or order changed, at most every [`INTERVAL`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ParticipantId;

/// Levels at or below this many dB under overload count as silence.
const SILENCE_DBOV: f32 = 60.0;
/// Smoothing time constant.
const TAU: Duration = Duration::from_millis(400);
/// Smoothed loudness to start / stop being a speaker (0..1).
pub const ENTER: f32 = 0.15;
pub const EXIT: f32 = 0.06;
/// Least time a speaker stays listed.
pub const HOLD: Duration = Duration::from_millis(1000);
/// Least time between two reports.
pub const INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Voice {
    score: f32,
    updated: Instant,
    speaking_since: Option<Instant>,
}

impl Voice {
    fn decayed(&self, now: Instant) -> f32 {
        let dt = now.saturating_duration_since(self.updated).as_secs_f32();
        self.score * (-dt / TAU.as_secs_f32()).exp()
    }
}

/// Speakers by a key: a participant, or (in a room) one audio track, so
/// that the voices a bridge carries from another node stay apart.
#[derive(Debug)]
pub struct ActiveSpeakers<K = ParticipantId> {
    voices: HashMap<K, Voice>,
    last_report: Vec<K>,
    last_report_at: Option<Instant>,
}

impl<K> Default for ActiveSpeakers<K> {
    fn default() -> Self {
        ActiveSpeakers {
            voices: HashMap::new(),
            last_report: vec![],
            last_report_at: None,
        }
    }
}

/// Loudness 0..1 of an RFC 6464 level (0 = 0 dBov, 127 = -127 dBov).
pub fn loudness(level_dbov: i8) -> f32 {
    let db = f32::from(level_dbov.unsigned_abs()).min(127.0);
    ((SILENCE_DBOV - db) / SILENCE_DBOV).clamp(0.0, 1.0)
}

impl<K: Copy + Eq + std::hash::Hash + Ord> ActiveSpeakers<K> {
    /// An audio frame of `who` with its level.
    pub fn observe(&mut self, who: K, level_dbov: i8, now: Instant) {
        let voice = self.voices.entry(who).or_insert(Voice {
            score: 0.0,
            updated: now,
            speaking_since: None,
        });
        let dt = now.saturating_duration_since(voice.updated).as_secs_f32();
        let keep = (-dt / TAU.as_secs_f32()).exp();
        // A frame covers ~20 ms: weigh the sample by at least that much.
        let keep = keep.min((-0.02 / TAU.as_secs_f32()).exp());
        voice.score = voice.score * keep + (1.0 - keep) * loudness(level_dbov);
        voice.updated = now;
        if voice.speaking_since.is_none() && voice.score >= ENTER {
            voice.speaking_since = Some(now);
        }
    }

    pub fn remove(&mut self, who: K) {
        self.voices.remove(&who);
    }

    /// Forget every voice `gone` says is gone.
    pub fn remove_where(&mut self, gone: impl Fn(&K) -> bool) {
        self.voices.retain(|k, _| !gone(k));
    }

    /// The current speakers, loudest first, when the list changed since the
    /// last report (and the report interval passed).
    pub fn poll(&mut self, now: Instant) -> Option<Vec<(K, f32)>> {
        if self
            .last_report_at
            .is_some_and(|t| now.saturating_duration_since(t) < INTERVAL)
        {
            return None;
        }
        let mut speakers = vec![];
        for (who, voice) in &mut self.voices {
            let score = voice.decayed(now);
            if let Some(since) = voice.speaking_since {
                if score < EXIT && now.saturating_duration_since(since) >= HOLD {
                    voice.speaking_since = None;
                }
            }
            if voice.speaking_since.is_some() {
                speakers.push((*who, score));
            }
        }
        speakers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let ids: Vec<K> = speakers.iter().map(|s| s.0).collect();
        if ids == self.last_report {
            return None;
        }
        self.last_report = ids;
        self.last_report_at = Some(now);
        Some(speakers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `who` 50 frames per second at `level` for `ms`.
    fn talk(s: &mut ActiveSpeakers, who: ParticipantId, level: i8, from: Instant, ms: u64) {
        for i in 0..ms / 20 {
            s.observe(who, level, from + Duration::from_millis(i * 20));
        }
    }

    fn ids(list: &[(ParticipantId, f32)]) -> Vec<ParticipantId> {
        list.iter().map(|s| s.0).collect()
    }

    #[test]
    fn levels_map_to_loudness() {
        assert_eq!(loudness(0), 1.0);
        assert_eq!(loudness(127), 0.0);
        assert!(loudness(30) > 0.4 && loudness(30) < 0.6);
        assert_eq!(
            loudness(-10),
            loudness(10),
            "the sign bit is not part of the level"
        );
    }

    #[test]
    fn a_talker_becomes_speaker_and_the_loudest_comes_first() {
        let t0 = Instant::now();
        let mut s = ActiveSpeakers::default();
        talk(&mut s, 1, 40, t0, 1000); // moderate
        talk(&mut s, 2, 15, t0, 1000); // loud
        talk(&mut s, 3, 127, t0, 1000); // silent
        let report = s.poll(t0 + Duration::from_millis(1000));
        assert_eq!(report.as_deref().map(ids), Some(vec![2, 1]));
        assert_eq!(s.poll(t0 + Duration::from_millis(1300)), None, "unchanged");
    }

    #[test]
    fn short_pauses_do_not_flicker_and_silence_ends_speaking() {
        let t0 = Instant::now();
        let mut s = ActiveSpeakers::default();
        talk(&mut s, 1, 20, t0, 600);
        assert_eq!(
            s.poll(t0 + Duration::from_millis(600)).as_deref().map(ids),
            Some(vec![1])
        );
        // A 300 ms breath, then talking again: never reported as stopped.
        let mut reports = vec![];
        for step in 0..10u64 {
            let now = t0 + Duration::from_millis(600 + step * 50);
            reports.extend(s.poll(now));
        }
        talk(&mut s, 1, 20, t0 + Duration::from_millis(900), 500);
        reports.extend(s.poll(t0 + Duration::from_millis(1400)));
        assert!(reports.is_empty(), "no change reported: {reports:?}");
        // Two seconds of silence (no packets: DTX) end it.
        let later = t0 + Duration::from_millis(3400);
        assert_eq!(s.poll(later).as_deref().map(ids), Some(vec![]));
    }

    #[test]
    fn a_single_loud_click_does_not_make_a_speaker() {
        let t0 = Instant::now();
        let mut s = ActiveSpeakers::default();
        talk(&mut s, 1, 127, t0, 500);
        s.observe(1, 0, t0 + Duration::from_millis(500));
        assert_eq!(s.poll(t0 + Duration::from_millis(520)), None);
    }

    #[test]
    fn reports_are_rate_limited() {
        let t0 = Instant::now();
        let mut s = ActiveSpeakers::default();
        talk(&mut s, 1, 10, t0, 400);
        assert!(s.poll(t0 + Duration::from_millis(400)).is_some());
        talk(&mut s, 2, 5, t0 + Duration::from_millis(400), 400);
        s.remove(1);
        assert!(
            s.poll(t0 + Duration::from_millis(500)).is_none(),
            "within the interval"
        );
        assert!(s.poll(t0 + Duration::from_millis(800)).is_some());
    }
}
