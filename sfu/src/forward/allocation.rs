//! How one subscriber's downlink estimate is shared among the video tracks
//! it receives (sans-IO, plain data).
//!
//! Equal shares while each one carries every track's lowest layer. When
//! the estimate is too small for that (a meeting member who just joined
//! and receives two dozen cameras from a 3 Mbit/s start), the lowest
//! layers are handed out in turn — tracks already flowing first, then in
//! a stable order — while they fit, and the rest get nothing: they pause
//! until the estimate grows, instead of every track starting and the
//! subscriber's pacer queueing seconds of video for all of them.

use std::collections::HashMap;
use std::hash::Hash;

/// One video track a subscriber receives, as the allocation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<K> {
    pub key: K,
    /// The estimate that carries its lowest layer.
    pub need_bps: u64,
    /// It is flowing now (not paused, a layer chosen).
    pub flowing: bool,
}

/// Each claim's share of `estimate_bps`, into `shares` (which it clears
/// of nothing: callers collect several subscribers into one map).
pub fn share_out<K: Copy + Ord + Hash>(
    estimate_bps: u64,
    claims: &mut [Claim<K>],
    shares: &mut HashMap<K, u64>,
) {
    if claims.is_empty() {
        return;
    }
    let equal = estimate_bps / claims.len() as u64;
    if claims.iter().all(|c| c.need_bps <= equal) {
        shares.extend(claims.iter().map(|c| (c.key, equal)));
        return;
    }
    claims.sort_by_key(|c| (!c.flowing, c.key));
    let mut left = estimate_bps;
    let mut granted = 0u64;
    for c in claims.iter() {
        if c.need_bps <= left {
            left -= c.need_bps;
            granted += 1;
        }
    }
    // What is left over is spread over the granted tracks.
    let extra = left.checked_div(granted).unwrap_or(0);
    let mut left = estimate_bps;
    for c in claims.iter() {
        let share = if c.need_bps <= left {
            left -= c.need_bps;
            c.need_bps + extra
        } else {
            0
        };
        shares.insert(c.key, share);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(key: u32, need_bps: u64, flowing: bool) -> Claim<u32> {
        Claim {
            key,
            need_bps,
            flowing,
        }
    }

    #[test]
    fn equal_shares_while_every_lowest_layer_fits() {
        let mut claims = vec![claim(1, 300_000, true), claim(2, 300_000, false)];
        let mut shares = HashMap::new();
        share_out(1_000_000, &mut claims, &mut shares);
        assert_eq!(shares, HashMap::from([(1, 500_000), (2, 500_000)]));
    }

    #[test]
    fn a_small_estimate_carries_what_fits_flowing_tracks_first() {
        // 24 tracks at 300 k from a 3 Mbit/s start: ten fit.
        let mut claims: Vec<Claim<u32>> = (0..24).map(|k| claim(k, 300_000, k >= 20)).collect();
        let mut shares = HashMap::new();
        share_out(3_000_000, &mut claims, &mut shares);
        let carried: Vec<u32> = (0..24).filter(|k| shares[k] > 0).collect();
        assert_eq!(carried, vec![0, 1, 2, 3, 4, 5, 20, 21, 22, 23]);
        assert!(carried.iter().all(|k| shares[k] == 300_000));
        // Never more than the estimate in all.
        assert!(shares.values().sum::<u64>() <= 3_000_000);
    }

    #[test]
    fn leftovers_go_to_the_carried_tracks() {
        let mut claims = vec![
            claim(1, 400_000, false),
            claim(2, 400_000, false),
            claim(3, 400_000, false),
        ];
        let mut shares = HashMap::new();
        share_out(1_000_000, &mut claims, &mut shares);
        assert_eq!(shares, HashMap::from([(1, 500_000), (2, 500_000), (3, 0)]));
    }
}
