//! Running test peers: for a while, or until a condition holds (bounded),
//! and the wait every room test uses.

use std::time::{Duration, Instant};

use super::TestPeer;

pub const T: Duration = Duration::from_secs(10);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn run(peers: &mut [&mut TestPeer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.run_for(ms(2));
        }
    }
}

/// Run peers until `cond` holds (bounded).
pub fn run_until(
    peers: &mut [&mut TestPeer],
    within: Duration,
    cond: impl Fn(&[&mut TestPeer]) -> bool,
) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond(peers) {
            return true;
        }
        run(peers, ms(20));
    }
    cond(peers)
}
