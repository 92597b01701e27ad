//! Unit tests of scalable streams (VP9 SVC: spatial layers in one RTP
//! stream) in the router: per-subscriber spatial layers, the end-of-picture
//! marker, and descriptors that lie.

use super::*;
use std::time::Duration;

const SIZES: [(u32, u32); 3] = [(320, 180), (640, 360), (1280, 720)];
/// Packets per spatial layer's frame and their sizes: at 30 pictures per
/// second about 150, +350 and +1,500 kbit/s.
const LAYER_PACKETS: [(u64, usize); 3] = [(1, 625), (2, 730), (6, 1040)];

fn track() -> TrackKey {
    TrackKey {
        publisher: 1,
        mid: Mid::from("v"),
    }
}

fn down(s: u64) -> DownTrackKey {
    DownTrackKey {
        subscriber: s,
        mid: Mid::from("v"),
    }
}

/// The packets of one picture, S0 first; a key picture's first packet
/// carries the scalability structure (all layers' sizes).
fn picture(first_seq: u64, key: bool) -> Vec<PacketInfo> {
    let mut packets = vec![];
    let mut seq = first_seq;
    for (spatial, (count, size)) in LAYER_PACKETS.iter().enumerate() {
        for i in 0..*count {
            let first = i == 0;
            packets.push(PacketInfo {
                seq,
                size: *size,
                spatial: spatial as u8,
                starts_frame: first,
                starts_keyframe: key && first && spatial == 0,
                ends_frame: i + 1 == *count,
                dims: (key && first).then_some(SIZES[spatial]),
                spatial_dims: (key && first && spatial == 0).then_some([
                    Some(SIZES[0]),
                    Some(SIZES[1]),
                    Some(SIZES[2]),
                    None,
                ]),
                ..Default::default()
            });
            seq += 1;
        }
    }
    packets
}

const PICTURE_PACKETS: u64 = 9;

/// 30 pictures a second for `secs` from sequence number `seq` on, a key
/// picture every 2 s, estimates re-applied every 100 ms; returns the time
/// (`seq` is left at the next number).
fn run(
    r: &mut Router,
    estimates: &[(ParticipantId, u64)],
    t0: Instant,
    secs: u64,
    seq: &mut u64,
) -> Instant {
    let mut rx = vec![];
    let mut now = t0;
    for i in 0..secs * 30 {
        now = t0 + Duration::from_millis(i * 1000 / 30);
        let first = *seq;
        *seq += PICTURE_PACKETS;
        for p in picture(first, i % 60 == 0) {
            r.route_packet(track(), &p, now, &mut rx);
        }
        if i % 3 == 0 {
            for (s, e) in estimates {
                r.set_estimate(*s, *e, now);
            }
            r.poll_layers(now, &mut vec![]);
        }
    }
    now
}

fn router_with_two_viewers(t0: Instant) -> Router {
    let mut r = Router::default();
    r.subscriber_connected(2, t0);
    r.subscriber_connected(3, t0);
    r.add_track(track(), MediaKind::Video, 1, t0);
    r.subscribe(down(2), track(), None, t0);
    r.subscribe(down(3), track(), None, t0);
    r
}

#[test]
fn each_subscriber_gets_the_spatial_layers_its_estimate_carries() {
    let t0 = Instant::now();
    let mut r = router_with_two_viewers(t0);
    // 2: 4 Mbit/s, the whole stream; 3: 700 kbit/s, spatial layers 0 and 1.
    let mut seq = 1;
    let now = run(&mut r, &[(2, 4_000_000), (3, 700_000)], t0, 12, &mut seq);
    let current = |r: &Router, d| r.selector(d).and_then(|s| s.current().copied());
    assert_eq!(current(&r, down(2)).map(|c| c.spatial), Some(2));
    assert_eq!(current(&r, down(3)).map(|c| c.spatial), Some(1));
    assert_eq!(r.layer_rank(down(3), now), Some((1, 3)));
    let views = r.subscription_views(3, now);
    let widths: Vec<u32> = views[0].available.iter().map(|l| l.width).collect();
    assert_eq!(widths, vec![320, 640, 1280]);
    // A spatial layer's rate includes the layers it is decoded from.
    let rates: Vec<u64> = views[0].available.iter().map(|l| l.bitrate_bps).collect();
    assert!(rates[0] < rates[1] && rates[1] < rates[2], "{rates:?}");
    assert!((120_000..200_000).contains(&rates[0]), "{rates:?}");
    assert!((400_000..600_000).contains(&rates[1]), "{rates:?}");

    // One picture: every packet reaches 2; 3 gets S0 and S1 and skips S2
    // (its sequence closes over them), with the marker on S1's last packet.
    let mut rx = vec![];
    let now = now + Duration::from_millis(33);
    for p in picture(seq, false) {
        r.route_packet(track(), &p, now, &mut rx);
        let to = |s| rx.iter().find(|d| d.down == down(s)).copied();
        let (two, three) = (to(2).expect("to 2"), to(3).expect("to 3"));
        assert!(two.send && !two.fresh);
        assert_eq!(two.ends_picture, p.ends_frame && p.spatial == 2);
        assert_eq!(three.send, p.spatial <= 1, "{p:?}");
        assert_eq!(three.ends_picture, p.ends_frame && p.spatial == 1);
    }
}

#[test]
fn spatial_switches_go_down_at_a_picture_and_up_at_a_key_picture() {
    let t0 = Instant::now();
    let mut r = router_with_two_viewers(t0);
    let mut seq = 1;
    let now = run(&mut r, &[(2, 4_000_000), (3, 4_000_000)], t0, 4, &mut seq);
    let spatial = |r: &Router| {
        r.selector(down(3))
            .and_then(|s| s.current())
            .map(|c| c.spatial)
    };
    assert_eq!(spatial(&r), Some(2));
    // 3's link collapses: from the next picture on it gets less, without a
    // keyframe and without a fresh start of its stream.
    r.set_estimate(3, 400_000, now);
    r.poll_layers(now, &mut vec![]);
    let mut rx = vec![];
    let mut requests = 0;
    for p in picture(seq, false) {
        requests += usize::from(r.route_packet(track(), &p, now, &mut rx).is_some());
        let d = rx
            .iter()
            .find(|d| d.down == down(3))
            .copied()
            .expect("to 3");
        assert!(!d.fresh);
        assert_eq!(d.send, p.spatial == 0, "{p:?}");
    }
    seq += PICTURE_PACKETS;
    assert_eq!(spatial(&r), Some(0));
    assert_eq!(requests, 0, "going down needs no keyframe");
    // It recovers: the way up waits for a key picture (asking for one)
    // and takes it within the stream (no fresh start).
    let mut now = now + Duration::from_secs(30);
    let mut asked = false;
    for _ in 0..300 {
        if r.selector(down(3))
            .and_then(|s| s.target())
            .map(|c| c.spatial)
            == Some(2)
        {
            break;
        }
        now += Duration::from_millis(33);
        for p in picture(seq, false) {
            asked |= r.route_packet(track(), &p, now, &mut rx).is_some();
        }
        seq += PICTURE_PACKETS;
        r.set_estimate(3, 4_000_000, now);
        r.poll_layers(now, &mut vec![]);
    }
    for p in picture(seq, false) {
        asked |= r.route_packet(track(), &p, now, &mut rx).is_some();
        let d = rx
            .iter()
            .find(|d| d.down == down(3))
            .copied()
            .expect("to 3");
        assert_eq!(d.send, p.spatial == 0, "not before a key picture: {p:?}");
    }
    seq += PICTURE_PACKETS;
    assert!(asked, "a key picture was asked for");
    for p in picture(seq, true) {
        r.route_packet(track(), &p, now + Duration::from_millis(33), &mut rx);
        let d = rx
            .iter()
            .find(|d| d.down == down(3))
            .copied()
            .expect("to 3");
        assert!(d.send && !d.fresh, "{p:?}");
    }
    assert_eq!(spatial(&r), Some(2));
}

#[test]
fn a_packet_beyond_the_announced_layers_is_dropped_and_counted() {
    let t0 = Instant::now();
    let mut r = router_with_two_viewers(t0);
    let mut seq = 1;
    let now = run(&mut r, &[(2, 4_000_000), (3, 4_000_000)], t0, 2, &mut seq);
    let mut rx = vec![];
    let liar = PacketInfo {
        seq,
        size: 900,
        spatial: 5,
        starts_frame: true,
        ..Default::default()
    };
    r.route_packet(track(), &liar, now, &mut rx);
    assert_eq!(rx.len(), 2);
    assert!(
        rx.iter().all(|d| !d.send),
        "skipped by every flowing stream"
    );
    assert_eq!(r.take_lying_descriptors(), 1);
    // The stream goes on.
    for p in picture(seq + 1, false) {
        r.route_packet(track(), &p, now, &mut rx);
        assert!(rx.iter().all(|d| d.send));
    }
    assert_eq!(r.subscription_views(2, now)[0].available.len(), 3);
}

/// Key-picture requests for switches down within the stream, polled at `at`.
fn down_switch_requests(r: &mut Router, at: Instant) -> usize {
    let mut actions = vec![];
    r.poll_keyframes(at, &mut actions);
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouterAction::RequestKeyframe {
                    cause: KeyframeCause::LossyDownSwitch,
                    ..
                }
            )
        })
        .count()
}

/// The top spatial layer flowing to `d`.
fn spatial_of(r: &Router, d: DownTrackKey) -> Option<u8> {
    r.selector(d).and_then(|s| s.current()).map(|c| c.spatial)
}

#[test]
fn a_lossy_switch_down_asks_for_a_key_picture_a_clean_one_does_not() {
    let t0 = Instant::now();
    let mut r = router_with_two_viewers(t0);
    let mut seq = 1;
    let now = run(&mut r, &[(2, 4_000_000), (3, 4_000_000)], t0, 4, &mut seq);
    // 2's link shrinks without loss: down at the next picture, no request.
    let now = run(&mut r, &[(2, 700_000), (3, 4_000_000)], now, 1, &mut seq);
    assert_eq!(spatial_of(&r, down(2)), Some(1));
    assert_eq!(down_switch_requests(&mut r, now), 0);
    // 3's shrinks while it reports 20 % loss: a key picture is asked for.
    r.set_loss(3, 0.2);
    let now = run(&mut r, &[(2, 700_000), (3, 400_000)], now, 1, &mut seq);
    assert_eq!(spatial_of(&r, down(3)), Some(0));
    assert_eq!(down_switch_requests(&mut r, now), 1);
}

#[test]
fn a_switch_down_before_any_report_or_after_nacks_asks_for_a_key_picture() {
    let t0 = Instant::now();
    let mut r = router_with_two_viewers(t0);
    let mut seq = 1;
    // 2 joined and is moved down within its first seconds: no receiver
    // report can have said what it lost yet.
    let now = run(&mut r, &[(2, 4_000_000), (3, 4_000_000)], t0, 1, &mut seq);
    let now = run(&mut r, &[(2, 700_000), (3, 4_000_000)], now, 1, &mut seq);
    assert_eq!(spatial_of(&r, down(2)), Some(1));
    assert_eq!(down_switch_requests(&mut r, now), 1);
    // Later, 3 goes down cleanly: no request; after NACKs it does ask.
    let now = run(&mut r, &[(2, 700_000), (3, 4_000_000)], now, 4, &mut seq);
    let now = run(&mut r, &[(2, 700_000), (3, 700_000)], now, 1, &mut seq);
    assert_eq!(spatial_of(&r, down(3)), Some(1));
    assert_eq!(down_switch_requests(&mut r, now), 0);
    r.note_nacks(3, now);
    let now = run(&mut r, &[(2, 700_000), (3, 400_000)], now, 1, &mut seq);
    assert_eq!(spatial_of(&r, down(3)), Some(0));
    assert_eq!(down_switch_requests(&mut r, now), 1);
}
