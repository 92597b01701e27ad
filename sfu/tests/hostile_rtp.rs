//! Hostile RTP from a publisher, against the real server over UDP: what the
//! server receives from a broken or malicious encoder is dropped or
//! absorbed, counted in `/metrics`, never panics the server and never
//! stalls another publisher's viewer.
//!
//! The publisher runs str0m in RTP mode ([`RtpPublisher`]), so the test
//! chooses sequence numbers, timestamps, SSRCs and payload bytes; a
//! frame-mode WHEP viewer counts the frames it decodes. A second publisher
//! with its own viewer, in another room on the same (single) media worker,
//! runs normally the whole time: its viewer must get at least 90 % of the
//! frames sent during every step.
//!
//! Steps, each followed by a second of normal frames the viewer must decode:
//! 1. normal VP8 at 30 fps;
//! 2. malformed VP8 payload descriptors (truncated, or L=1 without T=1)
//!    between valid frames: dropped, each counted once in
//!    `sfu_malformed_packets_total{codec="vp8"}`;
//! 3. a sequence-number jump of +20000, then a timestamp jump of one hour,
//!    on the same SSRC: the server re-bases its outgoing stream, and the
//!    viewer sees no gap at all;
//! 4. RTX (RFC 4588) for packets never sent: garbage into numbers the
//!    publisher skipped (each counted as malformed), an empty repair, a
//!    repair of a number 5000 back, one too short to hold its original
//!    sequence number. str0m only resends what it sent, so these are
//!    written on a second send stream declared on the main stream's RTX
//!    SSRC;
//! 5. an SSRC change mid-stream (`DirectApi::reset_stream_tx`, a new SSRC
//!    and RTX SSRC on the same mid, a new sequence series and timeline,
//!    starting with a keyframe as a restarted encoder does): no gap;
//! 6. packets with an empty payload on the main SSRC: squeezed out, no gap;
//! 7. datagrams with broken RTP headers, sent from the publisher's own
//!    address (which the server maps to its session): no gap.
//!
//! Every step, the bystander's viewer gets 90 % of its frames and no gap.
//! At the end no session has ended, `/healthz` answers and the server
//! thread still runs. In steps 2 and 4 a dropped packet's number stays
//! unused downstream: the viewer NACKs it and sees the next frame as
//! non-contiguous (`sfu_nacks_received_total` grows).
//!
//! What `/metrics` shows: malformed payloads (steps 2 and 4) in
//! `sfu_malformed_packets_total`; nothing specific for re-bases, SSRC
//! changes, empty payloads or repairs str0m discards (the rewriter's
//! `jumps` and `dropped_late` are not exported); packets str0m rejects
//! before the server sees them (step 7) only in `sfu_packets_received_total`.
//!
//! What str0m cannot send, and what of it reaches the server:
//! - Padding-only packets: str0m writes padding only as blank packets on
//!   an RTX SSRC (or on SSRC 0 for BWE probes), when its pacer pads for the
//!   bandwidth estimator, and sends media packets unpadded; `RtpWrite` has
//!   no padding flag. str0m's receiver removes padding after SRTP
//!   authentication (`RtpHeader::unpad_payload`), drops padding-only RTX
//!   packets itself, and hands a padding-only packet on the main SSRC to the
//!   server as a packet with an empty payload: exactly what step 6 sends.
//! - Truncated headers, CSRC counts and extension lengths past the end, and
//!   unknown extension profiles: `RtpHeader::parse` (str0m's
//!   `Session::handle_rtp_receive`) rejects them before SRTP, so the server
//!   never sees them. They need no keys to produce, so step 7 sends them
//!   raw, with the publisher's SSRC and sequence numbers.
//! - Padding longer than its payload, inside an authenticated SRTP packet:
//!   cannot be produced (the test has no SRTP keys, str0m exports none).
//!   str0m unpads only after authenticating, and `unpad_payload` rejects a
//!   padding count past the payload. Step 7 sends such a packet
//!   unauthenticated (P=1, a padding count larger than the payload): it
//!   fails SRTP authentication, as does a well-formed header with a forged
//!   payload.
//! - Garbage datagrams from addresses the server does not know are covered
//!   by `hostile_input_does_not_disturb_a_running_session` in media.rs.
//!
//! Two known gaps are kept below as ignored reproducers (`--ignored`): a
//! repair far ahead or a sequence jump back freezes the stream inside
//! str0m, and a forged SSRC with a MID extension can divert the server's
//! keyframe requests.
//!
//! Set RUST_LOG (e.g. `sfu=debug`) to see the server's log.

mod common;

use std::error::Error;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::rtp_publisher::{watch_publisher, watch_viewer, RtpPublisher, Watched};
use common::{post_sdp, TestPeer, TestResult, TestServer};
use sfu::config::ConfigArgs;
use str0m::RtcConfig;

type BoxError = Box<dyn Error + Send + Sync>;

/// Every peer thread stops by itself after this, whatever happens.
const LIMIT: Duration = Duration::from_secs(180);
/// Normal frames after each step's mischief: the viewer must decode them.
const TAIL: Duration = Duration::from_secs(1);

/// VP8 payloads whose descriptor (RFC 7741 4.2) does not parse.
const MALFORMED_VP8: [&[u8]; 7] = [
    &[0x80],                   // X=1, the extension byte missing
    &[0x90, 0x80],             // I=1, the PictureID missing
    &[0x90, 0x80, 0x81],       // M=1: a 15-bit PictureID cut after one byte
    &[0x80, 0x20],             // T=1, the TID byte missing
    &[0x80, 0x40, 0x05, 0xaa], // L=1 without T=1 (forbidden)
    &[0x90, 0x80, 0x81, 0x02], // a whole descriptor and no VP8 data after it
    &[0x10],                   // X=0, S=1 and no VP8 data
];

fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

async fn viewer(server: &TestServer, room: &str, identity: &str) -> Result<TestPeer, BoxError> {
    let (mut viewer, offer) = TestPeer::viewer(RtcConfig::new());
    let token = server.token(room, identity, false, true);
    let posted = post_sdp(&format!("{}/whep/{room}", server.base), &token, &offer).await;
    if posted.status != 201 {
        return Err(format!("WHEP POST {}: {}", posted.status, posted.body).into());
    }
    viewer.accept_answer(&posted.body)?;
    Ok(viewer)
}

async fn publisher(
    server: &TestServer,
    room: &str,
    identity: &str,
) -> Result<RtpPublisher, BoxError> {
    let (mut publisher, offer) = RtpPublisher::new();
    let token = server.token(room, identity, true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &token, &offer).await;
    if posted.status != 201 {
        return Err(format!("WHIP POST {}: {}", posted.status, posted.body).into());
    }
    publisher.accept_answer(&posted.body)?;
    Ok(publisher)
}

/// The publisher and viewer that must not notice anything.
struct Bystander {
    publisher: Watched<RtpPublisher>,
    viewer: Watched<TestPeer>,
}

/// Frames sent, frames the viewer decoded, and frames it decoded after a
/// gap it could not repair.
#[derive(Debug, Clone, Copy, Default)]
struct Frames {
    sent: u64,
    seen: u64,
    gaps: u64,
}

/// Run one step: `mischief` after every frame for `hostile_for`, then
/// [`TAIL`] of normal frames. Checks that the hostile publisher's viewer
/// decodes the tail (and, if `continuous`, never sees a gap it cannot
/// repair), and that the bystander's viewer got 90 % of its frames over the
/// whole step, without a gap. Returns the publisher and the hostile
/// viewer's frames during the mischief and the tail.
async fn step(
    name: &'static str,
    mut publisher: RtpPublisher,
    viewer: &Watched<TestPeer>,
    bystander: &Bystander,
    continuous: bool,
    hostile_for: Duration,
    mischief: impl FnMut(&mut RtpPublisher) + Send + 'static,
) -> Result<(RtpPublisher, Frames, Frames), BoxError> {
    let (seen, gaps) = (viewer.counter(), viewer.second_counter());
    let by_start = (bystander.publisher.get(), bystander.viewer.get());
    let by_gaps = bystander.viewer.get_second();
    let (publisher, during, tail) = tokio::task::spawn_blocking(move || {
        let frames = |p: &RtpPublisher| Frames {
            sent: p.frames_sent,
            seen: seen.load(Ordering::Relaxed),
            gaps: gaps.load(Ordering::Relaxed),
        };
        let start = frames(&publisher);
        publisher.run_for(hostile_for, mischief);
        let middle = frames(&publisher);
        publisher.run_for(TAIL, |_| {});
        let end = frames(&publisher);
        let diff = |a: Frames, b: Frames| Frames {
            sent: b.sent - a.sent,
            seen: b.seen.saturating_sub(a.seen),
            gaps: b.gaps.saturating_sub(a.gaps),
        };
        (publisher, diff(start, middle), diff(middle, end))
    })
    .await?;
    let by = Frames {
        sent: bystander.publisher.get() - by_start.0,
        seen: bystander.viewer.get().saturating_sub(by_start.1),
        gaps: bystander.viewer.get_second() - by_gaps,
    };
    eprintln!(
        "{name}: viewer decoded {}/{} frames during ({} after a gap), {}/{} after ({}); bystander {}/{} ({})",
        during.seen, during.sent, during.gaps, tail.seen, tail.sent, tail.gaps, by.seen, by.sent, by.gaps
    );
    assert!(
        tail.sent >= 20,
        "{name}: the publisher kept sending: {tail:?}"
    );
    assert!(
        tail.seen * 2 >= tail.sent,
        "{name}: the viewer keeps decoding afterwards: {tail:?}"
    );
    assert!(by.sent >= 20, "{name}: the bystander kept sending: {by:?}");
    assert!(
        by.seen * 10 >= by.sent * 9,
        "{name}: the bystander's viewer got under 90 % of its frames: {by:?}"
    );
    assert_eq!(by.gaps, 0, "{name}: the bystander's stream has no gap");
    if continuous {
        assert_eq!(
            during.gaps + tail.gaps,
            0,
            "{name}: the viewer's stream stays continuous"
        );
    }
    Ok((publisher, during, tail))
}

/// Datagrams whose RTP header is broken, or which fail SRTP
/// authentication, with the publisher's payload type, SSRC and next
/// sequence number.
fn broken_datagrams(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<Vec<u8>> {
    let header = |first: u8| {
        let mut h = vec![first, pt & 0x7f];
        h.extend(seq.to_be_bytes());
        h.extend(ts.to_be_bytes());
        h.extend(ssrc.to_be_bytes());
        h
    };
    // Where an SRTP authentication tag would be.
    let tag = [0xa5u8; 10];
    vec![
        // The fixed header cut after 7 of its 12 bytes.
        header(0x80)[..7].to_vec(),
        // 15 CSRCs announced, two present.
        [header(0x8f), vec![0; 8]].concat(),
        // X=1: an extension of 64 words announced, one present.
        [header(0x90), vec![0xbe, 0xde, 0x00, 0x40, 0x10, 0x31, 0, 0]].concat(),
        // X=1 with an extension profile that is neither one- nor two-byte.
        [header(0x90), vec![0x12, 0x34, 0x00, 0x01, 0, 0, 0, 0]].concat(),
        // P=1: a padding count of 200 at the end of an 8-byte payload
        // (unauthenticated: the tag is made up).
        [
            header(0xa0),
            vec![0x90, 0x80, 0x80, 0x01, 0x11, 0x02, 0x00, 200],
            tag.to_vec(),
        ]
        .concat(),
        // A well-formed header and a forged payload.
        [header(0x80), vec![0x90; 100], tag.to_vec()].concat(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rtp_is_dropped_or_absorbed_and_disturbs_no_one() -> TestResult {
    init_logs();
    let started = Instant::now();
    // One media worker: the hostile publisher and the bystander share its
    // loop, so a stall on the hostile path would show on the bystander.
    let server = TestServer::start_with(ConfigArgs {
        session_timeout_secs: Some(10),
        workers: Some(1),
        ..Default::default()
    });
    let malformed = || server.metric_with("sfu_malformed_packets_total", "codec=\"vp8\"");

    let bystander = Bystander {
        viewer: watch_viewer(viewer(&server, "calm", "calm-viewer").await?, LIMIT),
        publisher: watch_publisher(publisher(&server, "calm", "calm-encoder").await?, LIMIT),
    };
    let hostile_viewer = watch_viewer(viewer(&server, "hostile", "viewer").await?, LIMIT);
    let mut publisher = publisher(&server, "hostile", "encoder").await?;
    // Step 4 writes its own repairs on the RTX SSRC; str0m's resends there
    // (numbered from its own counter) would move the server's RTX window
    // away from them.
    publisher.resend = false;

    // Connect, and wait (bounded) for both viewers' first frames.
    let seen = hostile_viewer.counter();
    let publisher = tokio::task::spawn_blocking(move || {
        let mut publisher = publisher;
        let end = Instant::now() + Duration::from_secs(10);
        publisher.run_while(
            |_| seen.load(Ordering::Relaxed) < 10 && Instant::now() < end,
            |_| {},
        );
        publisher
    })
    .await?;
    assert!(
        hostile_viewer.get() >= 10,
        "the viewer decodes the publisher's first frames: {}",
        hostile_viewer.get()
    );
    let end = Instant::now() + Duration::from_secs(10);
    while bystander.viewer.get() < 10 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bystander.viewer.get() >= 10, "the bystander's viewer plays");
    eprintln!("both viewers play after {:?}", started.elapsed());

    // 1. Normal VP8.
    let (publisher, _, _) = step(
        "1 normal",
        publisher,
        &hostile_viewer,
        &bystander,
        true,
        Duration::from_secs(1),
        |_| {},
    )
    .await?;

    // 2. Malformed payload descriptors between valid frames. Each dropped
    // packet's number stays unused downstream: the viewer sees a gap (it
    // NACKs it, and its depacketizer flags the next frame non-contiguous).
    let (before, extra_before) = (malformed().await, publisher.extra_packets);
    let mut next = 0;
    let (publisher, during, _) = step(
        "2 malformed payloads",
        publisher,
        &hostile_viewer,
        &bystander,
        false,
        Duration::from_secs(2),
        move |p| {
            for _ in 0..2 {
                p.send_extra(MALFORMED_VP8[next % MALFORMED_VP8.len()].to_vec());
                next += 1;
            }
        },
    )
    .await?;
    let sent = (publisher.extra_packets - extra_before) as f64;
    let counted = malformed().await - before;
    eprintln!("2: {sent} malformed packets sent, {counted} counted");
    assert!(
        counted >= sent * 0.9 && counted <= sent,
        "each malformed packet counted once: {counted} of {sent}"
    );
    assert!(
        during.seen * 2 >= during.sent,
        "the viewer decodes the valid frames between malformed ones: {during:?}"
    );

    // 3. A sequence-number jump, then a timestamp jump, on the same SSRC.
    let mut jumped = false;
    let (publisher, _, _) = step(
        "3a sequence +20000",
        publisher,
        &hostile_viewer,
        &bystander,
        true,
        Duration::from_secs(1),
        move |p| {
            if !jumped {
                p.seq += 20_000;
                jumped = true;
            }
        },
    )
    .await?;
    let mut jumped = false;
    let (publisher, _, _) = step(
        "3b timestamp +1 h",
        publisher,
        &hostile_viewer,
        &bystander,
        true,
        Duration::from_secs(1),
        move |p| {
            if !jumped {
                p.ts_offset = p.ts_offset.wrapping_add(3600 * 90_000);
                jumped = true;
            }
        },
    )
    .await?;

    // 4. RTX for packets never sent (the holes stay gaps, as in step 2).
    let (before, extra_before) = (malformed().await, publisher.extra_packets);
    let mut holes = 0u64;
    let (mut publisher, _, _) = step(
        "4 RTX for packets never sent",
        publisher,
        &hostile_viewer,
        &bystander,
        false,
        Duration::from_secs(2),
        move |p| {
            // Two sequence numbers the publisher skips: never sent.
            let hole = p.seq as u16;
            p.seq += 2;
            holes += 1;
            p.send_rtx(Some(hole), MALFORMED_VP8[holes as usize % 4]);
            p.send_rtx(Some(hole.wrapping_add(1)), &[]);
            // A number long gone, with a plausible VP8 continuation.
            p.send_rtx(
                Some((p.seq as u16).wrapping_sub(5000)),
                &[0x80, 0x80, 0x80, 0x01, 0x55, 0x55],
            );
            // Too short to hold an original sequence number.
            p.send_rtx(None, &[0x42]);
        },
    )
    .await?;
    publisher.remove_rtx_writer();
    let garbage = ((publisher.extra_packets - extra_before) / 4) as f64;
    let counted = malformed().await - before;
    eprintln!("4: {garbage} garbage repairs sent, {counted} counted as malformed");
    assert!(
        counted >= garbage * 0.9 && counted <= garbage,
        "garbage repairs reach the parser and are counted once: {counted} of {garbage}"
    );

    // 5. An SSRC change mid-stream.
    let old = publisher.ssrc();
    let new = publisher.change_ssrc(30_000);
    eprintln!("5: SSRC {old:?} -> {new:?}");
    assert!(new.is_some() && new != old, "the SSRC changed");
    let (publisher, _, _) = step(
        "5 SSRC change",
        publisher,
        &hostile_viewer,
        &bystander,
        true,
        Duration::from_secs(1),
        |_| {},
    )
    .await?;

    // 6. Empty payloads on the main SSRC (what a padding-only packet is
    // once str0m has removed its padding).
    let (publisher, _, _) = step(
        "6 empty payloads",
        publisher,
        &hostile_viewer,
        &bystander,
        true,
        Duration::from_secs(1),
        |p| {
            p.send_extra(vec![]);
            p.send_extra(vec![]);
        },
    )
    .await?;

    // 7. Broken headers and forged packets from the publisher's address.
    let datagrams_before = server.metric("sfu_packets_received_total").await;
    let (publisher, _, _) = step(
        "7 broken RTP headers",
        publisher,
        &hostile_viewer,
        &bystander,
        true,
        Duration::from_secs(1),
        |p| {
            let (Some(pt), Some(ssrc)) = (p.pt(), p.ssrc()) else {
                return;
            };
            for d in broken_datagrams(*pt, p.seq as u16, p.last_ts, *ssrc) {
                p.send_raw(&d);
            }
        },
    )
    .await?;
    let datagrams = server.metric("sfu_packets_received_total").await - datagrams_before;
    eprintln!(
        "7: {} raw datagrams sent; the server received {datagrams} datagrams in the step",
        publisher.raw_datagrams
    );
    assert!(publisher.raw_datagrams >= 100);
    assert!(datagrams >= publisher.raw_datagrams as f64);

    // Nothing died: every session is still there, the server answers.
    assert_eq!(server.metric("sfu_sessions_ended_total").await, 0.0);
    assert_eq!(server.metric("sfu_rtc_instances").await, 4.0);
    let health = reqwest::get(format!("{}/healthz", server.base)).await?;
    assert_eq!(health.status().as_u16(), 200, "the server is still up");
    assert!(!server.stopped(), "the server is running");

    for name in [
        "sfu_malformed_packets_total",
        "sfu_media_packets_received_total",
        "sfu_media_packets_forwarded_total",
        "sfu_media_packets_late_total",
        "sfu_packets_received_total",
        "sfu_nacks_received_total",
        "sfu_plis_received_total",
        "sfu_keyframe_requests_sent_total",
        "sfu_publisher_bframes",
        "sfu_publisher_reordered_frames_total",
        "sfu_sessions_ended_total",
    ] {
        eprintln!("{name} = {}", server.metric(name).await + 0.0);
    }
    let calm_publisher = bystander.publisher.stop();
    let calm_viewer = bystander.viewer.stop();
    let viewer = hostile_viewer.stop();
    eprintln!(
        "hostile publisher: {} frames ({} keyframes, {} keyframe requests), {} extra packets, {} raw datagrams",
        publisher.frames_sent,
        publisher.keyframes_sent,
        publisher.keyframe_requests,
        publisher.extra_packets,
        publisher.raw_datagrams
    );
    eprintln!("hostile viewer: {:?}", viewer.stats);
    eprintln!(
        "bystander: {} frames sent, viewer {:?}",
        calm_publisher.frames_sent, calm_viewer.stats
    );
    eprintln!("ran {:?}", started.elapsed());
    Ok(())
}

/// A datagram from nobody who knows the SRTP keys: a new SSRC, the MID
/// header extension naming the publisher's media line, any payload.
fn forged_ssrc_datagram(p: &RtpPublisher) -> Option<Vec<u8>> {
    let (id, pt) = (p.mid_extension_id()?, *p.pt()?);
    let mid = p.mid.to_string();
    let mut d = vec![0x90, pt, 0x13, 0x88];
    d.extend(p.last_ts.to_be_bytes());
    d.extend(0xdead_beef_u32.to_be_bytes());
    let mut ext = vec![(id << 4) | (mid.len() as u8 - 1)];
    ext.extend(mid.as_bytes());
    ext.resize(ext.len().div_ceil(4) * 4, 0);
    d.extend([0xbe, 0xde, 0, (ext.len() / 4) as u8]);
    d.extend(ext);
    d.extend([0x90; 60]);
    Some(d)
}

/// Known gap, kept as a reproducer (`--ignored`): which packets are new is
/// decided by str0m's receive register, before the server sees anything.
/// One RTX packet whose original sequence number is 20000 ahead of the
/// stream (a repair of a packet never sent) moves the register's window
/// there; a sequence number that jumps back 20000 on the same SSRC falls
/// behind it. Either way every later packet of the publisher is dropped as a
/// duplicate (`Ignoring dupe packet` at str0m's trace level) until the
/// numbers catch up, minutes later: the keyframes the server asks for never
/// arrive and the viewer freezes. The server's re-basing never gets a
/// chance: only forward jumps reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known gap: str0m drops a publisher's packets after a repair far ahead or a jump back"]
async fn a_repair_far_ahead_or_a_jump_back_does_not_freeze_the_stream() -> TestResult {
    init_logs();
    let server = TestServer::start(10);
    type Mischief = fn(&mut RtpPublisher);
    let cases: [(&str, Mischief); 2] = [
        ("a repair 20000 ahead", |p| {
            let osn = (p.seq as u16).wrapping_add(20_000);
            p.send_rtx(Some(osn), &[0x80, 0x80, 0x80, 0x01, 0x55]);
        }),
        ("a jump back by 20000", |p| p.seq -= 20_000),
    ];
    let mut frozen = vec![];
    for (i, (name, mischief)) in cases.into_iter().enumerate() {
        let room = format!("freeze-{i}");
        let viewer = watch_viewer(viewer(&server, &room, "viewer").await?, LIMIT);
        let mut publisher = publisher(&server, &room, "encoder").await?;
        publisher.resend = false;
        publisher.seq = 40_000;
        let seen = viewer.counter();
        let (sent, decoded, requests) = tokio::task::spawn_blocking(move || {
            publisher.run_for(Duration::from_secs(2), |_| {});
            let before = (
                publisher.frames_sent,
                seen.load(Ordering::Relaxed),
                publisher.keyframe_requests,
            );
            mischief(&mut publisher);
            publisher.run_for(Duration::from_secs(3), |_| {});
            (
                publisher.frames_sent - before.0,
                seen.load(Ordering::Relaxed).saturating_sub(before.1),
                publisher.keyframe_requests - before.2,
            )
        })
        .await?;
        viewer.stop();
        eprintln!(
            "after {name}: the viewer decoded {decoded} of {sent} frames; {requests} keyframe requests answered"
        );
        if decoded * 2 < sent {
            frozen.push(name);
        }
    }
    assert!(frozen.is_empty(), "the viewer froze after {frozen:?}");
    Ok(())
}

/// str0m maps an unknown SSRC to a media line by its MID header extension
/// before authenticating the packet (`Session::handle_rtp` calls
/// `mid_and_ssrc_for_header`, then `unprotect_rtp`). One forged datagram
/// from the publisher's address (no keys needed) re-keys the publisher's
/// receive stream to the forged SSRC (`Change main SSRC` at str0m's debug
/// level); the publisher's next packet gets a second receive stream on the
/// same media line, so media keeps flowing. Keyframe requests must still
/// reach the publisher: the server sends them to the SSRC whose packets
/// passed authentication last, not to whichever stream str0m finds by media
/// line (before that, in about half the sessions a viewer who joined
/// afterwards never got a picture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_ssrc_does_not_divert_keyframe_requests() -> TestResult {
    init_logs();
    let server = TestServer::start(10);
    let mut blind = vec![];
    for i in 0..4 {
        let room = format!("forged-{i}");
        let publisher = publisher(&server, &room, "encoder").await?;
        let publisher = tokio::task::spawn_blocking(move || {
            let mut publisher = publisher;
            publisher.run_for(Duration::from_secs(2), |_| {});
            if let Some(d) = forged_ssrc_datagram(&publisher) {
                publisher.send_raw(&d);
            }
            publisher.run_for(Duration::from_secs(1), |_| {});
            publisher
        })
        .await?;
        let requests = publisher.keyframe_requests;
        let late = watch_viewer(viewer(&server, &room, "late-viewer").await?, LIMIT);
        let publisher = tokio::task::spawn_blocking(move || {
            let mut publisher = publisher;
            publisher.run_for(Duration::from_secs(4), |_| {});
            publisher
        })
        .await?;
        let late = late.stop();
        eprintln!(
            "{room}: a viewer joining after the forgery decoded {} frames; the publisher got {} keyframe requests (the server has sent {} in all)",
            late.stats.video_frames,
            publisher.keyframe_requests - requests,
            server.metric("sfu_keyframe_requests_sent_total").await
        );
        if late.stats.video_frames < 30 {
            blind.push(room);
        }
    }
    assert!(
        blind.is_empty(),
        "no picture for the late viewer in {blind:?}"
    );
    Ok(())
}
