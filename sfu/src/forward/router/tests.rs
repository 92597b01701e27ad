//! Unit tests of the room router (simulated time, no sockets).

use super::*;
use crate::forward::probe::{MIN_PADDING_BPS, REPROBE_EVERY};
use std::time::Duration;

fn mid(s: &str) -> Mid {
    Mid::from(s)
}
fn track(p: u64, m: &str) -> TrackKey {
    TrackKey {
        publisher: p,
        mid: mid(m),
    }
}
fn down(s: u64, m: &str) -> DownTrackKey {
    DownTrackKey {
        subscriber: s,
        mid: mid(m),
    }
}
fn keyframe_requests(actions: &[RouterAction]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, RouterAction::RequestKeyframe { .. }))
        .count()
}
/// The down-tracks a packet is written to.
fn sent(rx: &[Delivery]) -> Vec<DownTrackKey> {
    rx.iter().filter(|d| d.send).map(|d| d.down).collect()
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn viewer_before_publisher_binds_when_publisher_arrives() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.subscriber_connected(2, t0);
    assert!(r
        .add_down_track(down(2, "1"), MediaKind::Video, None, t0)
        .is_empty());
    assert!(r
        .add_down_track(down(2, "0"), MediaKind::Audio, None, t0)
        .is_empty());
    let a = r.add_track(track(1, "0"), MediaKind::Audio, 1, t0);
    assert_eq!(
        a,
        vec![RouterAction::Bound {
            down: down(2, "0"),
            track: track(1, "0")
        }]
    );
    let v = r.add_track(track(1, "1"), MediaKind::Video, 1, t0);
    assert!(v.contains(&RouterAction::Bound {
        down: down(2, "1"),
        track: track(1, "1")
    }));
    assert_eq!(
        keyframe_requests(&v),
        1,
        "a new video subscriber asks for a keyframe"
    );
}

#[test]
fn video_flows_only_from_a_keyframe() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.subscriber_connected(2, t0);
    r.subscriber_connected(3, t0);
    let v = track(1, "v");
    r.add_track(v, MediaKind::Video, 1, t0);
    r.add_down_track(down(2, "v"), MediaKind::Video, None, t0);
    r.add_down_track(down(3, "v"), MediaKind::Video, None, t0);
    let mut rx = vec![];
    // Deltas before a keyframe reach nobody (and the request is throttled).
    let a = r.route_packet(v, &PacketInfo::simple(1, false), t0 + ms(10), &mut rx);
    assert!(rx.is_empty());
    assert!(a.is_none(), "throttled: a request went out at bind time");
    r.route_packet(v, &PacketInfo::simple(2, true), t0 + ms(40), &mut rx);
    assert_eq!(sent(&rx), vec![down(2, "v"), down(3, "v")]);
    assert!(rx.iter().all(|d| d.fresh), "each stream starts here");
    r.route_packet(v, &PacketInfo::simple(3, false), t0 + ms(41), &mut rx);
    assert_eq!(sent(&rx).len(), 2);
    assert!(rx.iter().all(|d| !d.fresh));
}

#[test]
fn a_publisher_gap_is_forwarded_and_only_an_unrepaired_one_asks_for_a_keyframe() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.subscriber_connected(2, t0);
    let v = track(1, "v");
    r.add_track(v, MediaKind::Video, 1, t0);
    r.add_down_track(down(2, "v"), MediaKind::Video, None, t0);
    let mut rx = vec![];
    r.route_packet(v, &PacketInfo::simple(1, true), t0, &mut rx);
    // 2 and 3 are lost: 4 still goes out (the subscriber NACKs the gap).
    let t1 = t0 + Duration::from_secs(2);
    let a = r.route_packet(v, &PacketInfo::simple(4, false), t1, &mut rx);
    assert_eq!(sent(&rx), vec![down(2, "v")]);
    assert_eq!(a, None);
    // 2's repair comes and is forwarded; 3's does not.
    r.route_packet(v, &PacketInfo::simple(2, false), t1 + ms(100), &mut rx);
    assert_eq!(sent(&rx), vec![down(2, "v")]);
    let a = r.route_packet(v, &PacketInfo::simple(5, false), t1 + ms(400), &mut rx);
    assert_eq!(sent(&rx), vec![down(2, "v")], "nothing closes");
    assert_eq!(
        a,
        Some(RouterAction::RequestKeyframe {
            track: v,
            layer: None,
            cause: KeyframeCause::PublisherGap
        })
    );
}

#[test]
fn nothing_is_decided_for_a_subscriber_until_it_connects() {
    let t0 = Instant::now();
    let mut r = Router::default();
    let v = track(1, "v");
    r.add_track(v, MediaKind::Video, 1, t0);
    let bound = r.add_down_track(down(2, "v"), MediaKind::Video, None, t0);
    assert_eq!(
        keyframe_requests(&bound),
        0,
        "a keyframe now would be wasted"
    );
    let mut rx = vec![];
    // A keyframe passes while the viewer is still connecting: it must not
    // start its stream on packets that cannot reach it.
    r.route_packet(v, &PacketInfo::simple(1, true), t0 + ms(10), &mut rx);
    r.route_packet(v, &PacketInfo::simple(2, false), t0 + ms(20), &mut rx);
    assert!(rx.is_empty());
    // Connected: the keyframe is asked for at once, and the stream starts there.
    let asked = r.subscriber_connected(2, t0 + ms(30));
    assert_eq!(keyframe_requests(&asked), 1);
    r.route_packet(v, &PacketInfo::simple(3, false), t0 + ms(40), &mut rx);
    assert!(rx.is_empty(), "no delta before the keyframe");
    r.route_packet(v, &PacketInfo::simple(4, true), t0 + ms(60), &mut rx);
    assert_eq!(sent(&rx), vec![down(2, "v")]);
    assert!(rx[0].fresh);
}

#[test]
fn audio_is_never_gated() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.add_track(track(1, "a"), MediaKind::Audio, 1, t0);
    r.add_down_track(down(2, "a"), MediaKind::Audio, None, t0);
    let mut rx = vec![];
    assert!(r
        .route_packet(track(1, "a"), &PacketInfo::simple(1, false), t0, &mut rx)
        .is_none());
    assert_eq!(sent(&rx), vec![down(2, "a")]);
}

#[test]
fn packets_of_a_dropped_temporal_layer_are_skips_for_the_flowing_stream() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.subscriber_connected(2, t0);
    let v = track(1, "v");
    r.add_track(v, MediaKind::Video, 1, t0);
    r.add_down_track(down(2, "v"), MediaKind::Video, None, t0);
    let mut rx = vec![];
    // 30 fps in three temporal layers at ~1.2 Mbit/s, for a second.
    let mut seq = 0;
    let mut now = t0;
    for i in 0..30u64 {
        now = t0 + ms(i * 33);
        seq += 1;
        let p = PacketInfo {
            seq,
            starts_keyframe: i == 0,
            starts_frame: true,
            size: 5000,
            temporal: [0, 2, 1, 2][(i % 4) as usize],
            sync: i % 4 != 0,
            ..Default::default()
        };
        r.route_packet(v, &p, now, &mut rx);
    }
    // 300 kbit/s fits the base temporal layer only.
    r.set_estimate(2, 400_000, now);
    r.poll_layers(now, &mut vec![]);
    let mut skips = 0;
    for i in 30..38u64 {
        seq += 1;
        let p = PacketInfo {
            seq,
            starts_frame: true,
            size: 5000,
            temporal: [0, 2, 1, 2][(i % 4) as usize],
            ..Default::default()
        };
        r.route_packet(v, &p, now + ms(i * 33), &mut rx);
        match rx.as_slice() {
            [d] if d.send => assert_eq!(p.temporal, 0),
            [d] => {
                assert!(p.temporal > 0);
                skips += 1;
                assert_eq!(d.down, down(2, "v"));
            }
            other => panic!("one delivery per packet: {other:?}"),
        }
    }
    assert_eq!(skips, 6);
}

#[test]
fn subscriber_requests_are_throttled_per_track() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.add_track(track(1, "v"), MediaKind::Video, 1, t0);
    for s in 2..12 {
        r.add_down_track(down(s, "v"), MediaKind::Video, None, t0);
    }
    let t1 = t0 + Duration::from_secs(1);
    let sent: usize = (2..12)
        .filter_map(|s| r.keyframe_requested(down(s, "v"), None, t1))
        .count();
    assert_eq!(sent, 1, "ten PLIs within one interval -> one request");
    assert_eq!(r.next_deadline(), Some(t1 + Duration::from_millis(500)));
    let mut actions = vec![];
    r.poll_keyframes(t1 + Duration::from_millis(500), &mut actions);
    assert_eq!(
        keyframe_requests(&actions),
        1,
        "the coalesced request is released once"
    );
}

#[test]
fn publisher_leaving_moves_viewers_to_the_next_or_unbinds() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.add_track(track(1, "v"), MediaKind::Video, 1, t0);
    r.add_track(track(5, "v"), MediaKind::Video, 1, t0);
    r.add_down_track(down(2, "v"), MediaKind::Video, None, t0);
    assert_eq!(
        r.source_of(down(2, "v")),
        Some(track(1, "v")),
        "oldest publisher first"
    );
    let a = r.remove_participant(1, t0);
    assert!(a.contains(&RouterAction::Bound {
        down: down(2, "v"),
        track: track(5, "v")
    }));
    let a = r.remove_participant(5, t0);
    assert_eq!(
        a,
        vec![RouterAction::Unbound {
            down: down(2, "v"),
            track: track(5, "v")
        }]
    );
    assert_eq!(r.track_count(), 0);
    r.remove_participant(2, t0);
    assert!(r.down_tracks.is_empty());
}

#[test]
fn a_participant_never_receives_its_own_track() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.add_down_track(down(1, "x"), MediaKind::Audio, None, t0);
    r.add_track(track(1, "a"), MediaKind::Audio, 1, t0);
    assert_eq!(r.source_of(down(1, "x")), None);
}

#[test]
fn pinned_subscriptions_receive_their_track_and_go_unbound_when_it_ends() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.add_track(track(1, "0"), MediaKind::Audio, 1, t0);
    r.add_track(track(2, "0"), MediaKind::Audio, 1, t0);
    // Subscriber 3 picks publisher 2's track explicitly (not the oldest).
    let actions = r.subscribe(down(3, "5"), track(2, "0"), None, t0);
    assert!(actions.contains(&RouterAction::Bound {
        down: down(3, "5"),
        track: track(2, "0")
    }));
    let mut rx = vec![];
    r.route_packet(track(1, "0"), &PacketInfo::simple(1, false), t0, &mut rx);
    assert!(rx.is_empty(), "not subscribed to publisher 1");
    r.route_packet(track(2, "0"), &PacketInfo::simple(1, false), t0, &mut rx);
    assert_eq!(sent(&rx), vec![down(3, "5")]);

    // The track is unpublished: the pinned line does not move to track 1.
    let actions = r.remove_track(track(2, "0"), t0);
    assert_eq!(
        actions,
        vec![RouterAction::Unbound {
            down: down(3, "5"),
            track: track(2, "0")
        }]
    );
    assert_eq!(r.source_of(down(3, "5")), None);
    // A new track published later does not capture the pinned line either.
    r.add_track(track(4, "0"), MediaKind::Audio, 1, t0);
    assert_eq!(r.source_of(down(3, "5")), None);
    // Re-subscribing the line to another track rebinds it.
    r.subscribe(down(3, "5"), track(1, "0"), None, t0);
    assert_eq!(r.source_of(down(3, "5")), Some(track(1, "0")));
    r.remove_down_track(down(3, "5"));
    r.route_packet(track(1, "0"), &PacketInfo::simple(1, false), t0, &mut rx);
    assert!(rx.is_empty(), "unsubscribed");
}

#[test]
fn subscriptions_to_own_or_missing_tracks_are_ignored() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.add_track(track(1, "0"), MediaKind::Video, 1, t0);
    assert!(r
        .subscribe(down(1, "3"), track(1, "0"), None, t0)
        .is_empty());
    assert!(r
        .subscribe(down(2, "3"), track(9, "0"), None, t0)
        .is_empty());
    assert_eq!(r.source_of(down(2, "3")), None);
}

/// A keyframe of simulcast layer `rid` at `width`.
fn layer_keyframe(rid: &str, width: u32) -> PacketInfo {
    PacketInfo {
        layer: Some(str0m::media::Rid::from(rid)),
        starts_keyframe: true,
        starts_frame: true,
        size: 1000,
        dims: Some((width, width * 9 / 16)),
        ..Default::default()
    }
}

#[test]
fn dynacast_wants_only_layers_some_subscriber_can_use() {
    let t0 = Instant::now();
    let mut r = Router::default();
    let t = track(1, "1");
    r.add_track(t, MediaKind::Video, 3, t0);
    let mut rx = vec![];
    assert_eq!(r.wanted_layers(t), None, "layers not seen yet");
    // Rid names deliberately do not follow size order.
    for (rid, w) in [("a", 1280), ("b", 320), ("c", 640)] {
        r.route_packet(t, &layer_keyframe(rid, w), t0, &mut rx);
    }
    let wanted = |r: &Router| -> Vec<(String, bool)> {
        r.wanted_layers(t)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, w)| (id.map(|r| r.to_string()).unwrap_or_default(), w))
            .collect()
    };
    let all_off = vec![
        ("b".into(), false),
        ("c".into(), false),
        ("a".into(), false),
    ];
    assert_eq!(wanted(&r), all_off, "no subscriber: nothing wanted");

    r.subscribe(down(2, "4"), t, Some(640), t0);
    assert_eq!(
        wanted(&r),
        vec![("b".into(), true), ("c".into(), true), ("a".into(), false)],
        "a 640-wide subscriber needs the two lower layers"
    );
    r.subscribe(down(3, "4"), t, Some(100), t0);
    assert_eq!(
        wanted(&r)[0],
        ("b".into(), true),
        "the lowest layer always serves"
    );
    r.subscribe(down(4, "4"), t, None, t0);
    assert!(
        wanted(&r).iter().all(|(_, w)| *w),
        "an unlimited subscriber wants all"
    );
    r.remove_down_track(down(4, "4"));
    r.set_max_width(down(2, "4"), Some(1280));
    assert!(
        wanted(&r).iter().all(|(_, w)| *w),
        "a raised limit wants the top again"
    );
    r.remove_participant(2, t0);
    r.remove_participant(3, t0);
    assert_eq!(wanted(&r), all_off);
}

/// Feed `tracks` three layers (320/640/1280 at ~150k/500k/2.5M bit/s, 30
/// fps) for `secs`, with subscriber estimates re-applied every 100 ms.
fn run_simulcast(
    r: &mut Router,
    tracks: &[TrackKey],
    estimates: &[(ParticipantId, u64)],
    t0: Instant,
    secs: u64,
) -> Instant {
    let layers = [("q", 320, 625), ("h", 640, 2083), ("f", 1280, 10416)];
    let mut rx = vec![];
    let mut now = t0;
    for i in 0..secs * 30 {
        now = t0 + Duration::from_millis(i * 1000 / 30);
        for t in tracks {
            for (rid, width, size) in layers {
                let packet = PacketInfo {
                    seq: i,
                    size,
                    starts_keyframe: i % 30 == 0,
                    ..layer_keyframe(rid, width)
                };
                r.route_packet(*t, &packet, now, &mut rx);
            }
        }
        if i % 3 == 0 {
            for (s, e) in estimates {
                r.set_estimate(*s, *e, now);
            }
            let mut probes = vec![];
            r.poll_layers(now, &mut probes);
        }
    }
    now
}

#[test]
fn a_subscribers_estimate_is_shared_by_all_the_video_it_receives() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.subscriber_connected(3, t0);
    r.subscriber_connected(4, t0);
    let (a, b) = (track(1, "1"), track(2, "1"));
    r.add_track(a, MediaKind::Video, 3, t0);
    r.add_track(b, MediaKind::Video, 3, t0);
    // Subscriber 3 receives both publishers; subscriber 4 only one. Both
    // have 4 Mbit/s: enough for one top layer, not for two.
    r.subscribe(down(3, "5"), a, None, t0);
    r.subscribe(down(3, "6"), b, None, t0);
    r.subscribe(down(4, "5"), a, None, t0);
    let now = run_simulcast(&mut r, &[a, b], &[(3, 4_000_000), (4, 4_000_000)], t0, 20);
    assert_eq!(
        r.layer_rank(down(4, "5"), now),
        Some((2, 3)),
        "one track: the top layer"
    );
    for d in [down(3, "5"), down(3, "6")] {
        assert_eq!(
            r.layer_rank(d, now),
            Some((1, 3)),
            "two tracks share 4 Mbit/s: the middle layer each"
        );
    }
}

#[test]
fn one_probe_target_per_subscriber_sums_its_tracks() {
    let t0 = Instant::now();
    let mut r = Router::default();
    r.subscriber_connected(3, t0);
    let (a, b) = (track(1, "1"), track(2, "1"));
    r.add_track(a, MediaKind::Video, 3, t0);
    r.add_track(b, MediaKind::Video, 3, t0);
    r.subscribe(down(3, "5"), a, None, t0);
    r.subscribe(down(3, "6"), b, None, t0);
    let now = run_simulcast(&mut r, &[a, b], &[(3, 1_600_000)], t0, 20);
    let mut probes = vec![];
    r.poll_layers(now, &mut probes);
    assert_eq!(
        probes.len(),
        1,
        "one entry for the one subscriber: {probes:?}"
    );
    let (who, request) = probes[0];
    let target = request.target_bps;
    assert_eq!(who, 3);
    // Both on the middle layer (1.6M / 2 fits 500k, not 2.5M): the probe
    // asks for both tracks' top layers together, not for one alone.
    assert_eq!(
        (
            r.layer_rank(down(3, "5"), now),
            r.layer_rank(down(3, "6"), now)
        ),
        (Some((1, 3)), Some((1, 3)))
    );
    let target = target.expect("room to grow: a probe");
    assert!(target > 2 * 2_500_000 && target < 2 * 4_000_000, "{target}");
}

/// Subscriber 2 receiving one three-layer track (returned) on line "5".
fn one_viewer_of_a_simulcast_track(t0: Instant) -> (Router, TrackKey) {
    let mut r = Router::default();
    r.subscriber_connected(2, t0);
    let a = track(1, "1");
    r.add_track(a, MediaKind::Video, 3, t0);
    r.subscribe(down(2, "5"), a, None, t0);
    (r, a)
}

#[test]
fn a_new_viewer_without_an_estimate_starts_from_the_initial_guess_not_the_top() {
    let t0 = Instant::now();
    let (mut r, a) = one_viewer_of_a_simulcast_track(t0);
    // No estimate yet: 1 Mbit/s is assumed, which carries 640 but not 1280.
    let now = run_simulcast(&mut r, &[a], &[], t0, 2);
    assert_eq!(r.layer_rank(down(2, "5"), now), Some((1, 3)));
}

#[test]
fn an_estimate_that_stops_changing_is_frozen() {
    let t0 = Instant::now();
    let (mut r, a) = one_viewer_of_a_simulcast_track(t0);
    // 700 k: enough for 640, not for 1280; the estimate repeats one value.
    let now = run_simulcast(&mut r, &[a], &[(2, 700_000)], t0, 20);
    assert_eq!(r.layer_rank(down(2, "5"), now), Some((1, 3)));
    let mut probes = vec![];
    r.poll_layers(now, &mut probes);
    let (_, request) = probes[0];
    assert!(request.target_bps.is_some(), "wants 1280: {request:?}");
    assert_eq!(request.floor_bps, 525_000, "frozen at 700 k: 3/4 of it");
    // The estimate moves: no fill.
    r.set_estimate(2, 710_000, now);
    probes.clear();
    r.poll_layers(now, &mut probes);
    assert_eq!(probes[0].1.floor_bps, MIN_PADDING_BPS);
}

#[test]
fn an_estimate_below_the_wanted_rate_is_probed_again_unless_it_falls() {
    let t0 = Instant::now();
    let (mut r, a) = one_viewer_of_a_simulcast_track(t0);
    let now = run_simulcast(&mut r, &[a], &[(2, 700_000)], t0, 20);
    let round_at = |r: &mut Router, at| {
        let mut probes = vec![];
        r.poll_layers(at, &mut probes);
        let request = probes[0].1;
        assert!(
            request.target_bps.is_some_and(|t| t > 700_000),
            "{request:?}"
        );
        assert_eq!(
            request.desired_bps(),
            request.target_bps.unwrap_or(0) + u64::from(request.round)
        );
        request.round
    };
    // 700 k wants 1280: a new round every REPROBE_EVERY (1 s), one bit/s
    // more each.
    assert_eq!(REPROBE_EVERY, Duration::from_secs(1));
    let first = round_at(&mut r, now);
    let now = run_simulcast(&mut r, &[a], &[(2, 700_000)], now, 4);
    let second = round_at(&mut r, now);
    assert!(
        (first + 3..=first + 4).contains(&second),
        "{first} -> {second}"
    );
    // A falling estimate is a full link: no round while it keeps falling.
    let mut now = now;
    for bps in [690_000, 680_000, 670_000, 660_000] {
        now = run_simulcast(&mut r, &[a], &[(2, bps)], now, 1);
    }
    assert_eq!(round_at(&mut r, now), second);
    // Once it holds for REPROBE_EVERY, rounds go on.
    let now = run_simulcast(&mut r, &[a], &[(2, 660_000)], now, 3);
    assert!(round_at(&mut r, now) > second);
}

#[test]
fn the_top_layer_is_probed_for_while_an_upgrade_waits_out_its_hold() {
    let t0 = Instant::now();
    let (mut r, a) = one_viewer_of_a_simulcast_track(t0);
    // 300 k: the lowest layer; the next one does not fit, so only it is
    // probed for (a probe for the top overshoots a shaped link).
    let now = run_simulcast(&mut r, &[a], &[(2, 300_000)], t0, 20);
    assert_eq!(r.layer_rank(down(2, "5"), now), Some((0, 3)));
    let mut probes = vec![];
    r.poll_layers(now, &mut probes);
    let low = probes[0].1;
    let next = low.target_bps.expect("wants more");
    assert_eq!(low.top_bps, Some(next), "{low:?}");
    assert_eq!(low.desired_bps(), next + u64::from(low.round));
    // 900 k: the middle layer fits and its hold starts; now the top is
    // probed for, so the estimate can show the top fits before the hold
    // ends (one hold instead of one per step).
    let now = now + Duration::from_millis(100);
    r.set_estimate(2, 900_000, now);
    probes.clear();
    r.poll_layers(now, &mut probes);
    let pending = probes[0].1;
    assert_eq!(r.layer_rank(down(2, "5"), now), Some((0, 3)), "held");
    let top = pending.top_bps.expect("wants more");
    assert!(top > 2_500_000, "the top layer's rate: {pending:?}");
    assert!(
        pending.target_bps.is_some_and(|t| t < 900_000),
        "{pending:?}"
    );
    assert_eq!(
        pending.floor_bps,
        pending.target_bps.unwrap_or(0),
        "padding for the next layer only"
    );
    assert_eq!(pending.desired_bps(), top + u64::from(pending.round));
}
