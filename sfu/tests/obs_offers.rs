//! The WHIP offers OBS Studio 32 really sends get an answer OBS goes on
//! with. The fixtures in `fixtures/obs/` are the offers of OBS's obs-webrtc
//! plugin as libdatachannel 0.21 prints them on Windows and macOS (how they
//! were made: `fixtures/obs/SOURCE.md`); each is also posted as OBS's Linux
//! Flatpak prints it (libdatachannel 0.24 over libnice), and the H.264 one
//! as OBS 32.0 sent it (before simulcast: no header extensions).
//!
//! What OBS needs of the answer, and what is checked: 201 with a Location;
//! both sections accepted under OBS's mids with `a=setup` active or passive
//! (libdatachannel throws on actpass); the offered video codec (H.264, AV1
//! or H.265) and Opus at the payload types OBS sends whatever the answer
//! says (96 and 111); every simulcast rid received, `a=rid:N recv` each and
//! all on the first `a=simulcast` line (OBS counts its `;` and stops the
//! stream unless every layer is there); the mid and rid header extensions at
//! OBS's fixed ids 1 and 2, no format or extension it did not offer, and no
//! TWCC (OBS offers NACK, PLI and REMB only). Other feedback the answer adds
//! (str0m's `ccm fir`) is not checked: libdatachannel ignores the answer's
//! `rtcp-fb` lines.

mod common;

use common::{post_sdp, TestResult, TestServer};

const H264: &str = include_str!("fixtures/obs/h264.sdp");
const H264_SIMULCAST3: &str = include_str!("fixtures/obs/h264_simulcast3.sdp");
const AV1: &str = include_str!("fixtures/obs/av1.sdp");
const AV1_SIMULCAST3: &str = include_str!("fixtures/obs/av1_simulcast3.sdp");
const HEVC: &str = include_str!("fixtures/obs/hevc.sdp");

/// whip-output.cpp: `audio_payload_type = 111`, `video_payload_type = 96`;
/// its packetizers send these whatever the answer numbers the codecs.
const OBS_AUDIO_PT: &str = "111";
const OBS_VIDEO_PT: &str = "96";

/// The lines of the first m-section of `kind`.
fn section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
    let head = format!("m={kind} ");
    sdp.lines()
        .skip_while(|l| !l.starts_with(&head))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("m="))
        .map(|(_, l)| l)
        .collect()
}

/// The payload types of a section's m-line.
fn formats<'a>(section: &[&'a str]) -> Vec<&'a str> {
    section
        .first()
        .map(|m| m.split_ascii_whitespace().skip(3).collect())
        .unwrap_or_default()
}

/// The m-line's port: 0 is a rejected section.
fn port(section: &[&str]) -> Option<u16> {
    section
        .first()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The codec a section's rtpmap gives `pt`.
fn codec<'a>(section: &[&'a str], pt: &str) -> Option<&'a str> {
    let prefix = format!("a=rtpmap:{pt} ");
    section
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|m| m.split('/').next())
}

/// The values of a section's `a={name}:` attributes.
fn attrs<'a>(section: &[&'a str], name: &str) -> Vec<&'a str> {
    let prefix = format!("a={name}:");
    section
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// A section's header extensions as (id, uri).
fn extmaps<'a>(section: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    attrs(section, "extmap")
        .into_iter()
        .filter_map(|v| {
            let mut parts = v.split_ascii_whitespace();
            let id = parts.next()?.split('/').next()?;
            Some((id, parts.next()?))
        })
        .collect()
}

/// What OBS reads from an answer before anything else
/// (`simulcast_layers_in_answer` in whip-utils.h): one more than the `;`
/// on the answer's first `a=simulcast` line, 0 without one.
fn obs_layers_accepted(answer: &str) -> usize {
    let Some(start) = answer.find("a=simulcast") else {
        return 0;
    };
    let Some(len) = answer[start..].find("\r\n") else {
        return 0;
    };
    1 + answer[start..start + len].matches(';').count()
}

/// The offer as OBS's Linux Flatpak sends it: libdatachannel 0.24 (0.22
/// and later print `a=setup`, `a=ice-ufrag` and `a=ice-pwd` after every
/// m-section instead of once at session level) over libnice (whose local
/// description has no `ice-options`, so only libdatachannel's `trickle`).
fn flatpak(offer: &str) -> String {
    let moved = |l: &&str| {
        l.starts_with("a=setup:") || l.starts_with("a=ice-ufrag:") || l.starts_with("a=ice-pwd:")
    };
    let ice: Vec<&str> = offer.lines().filter(moved).collect();
    assert_eq!(ice.len(), 3, "session-level setup, ufrag and pwd: {offer}");
    let mut out = String::new();
    let mut in_media = false;
    for line in offer.lines().filter(|l| !moved(l)) {
        if line.starts_with("m=") {
            if in_media {
                ice.iter().for_each(|l| out.push_str(&format!("{l}\r\n")));
            }
            in_media = true;
        }
        let line = match line.strip_prefix("a=ice-options:") {
            Some(_) => "a=ice-options:trickle",
            None => line,
        };
        out.push_str(&format!("{line}\r\n"));
    }
    ice.iter().for_each(|l| out.push_str(&format!("{l}\r\n")));
    out
}

/// The H.264 offer as OBS 32.0 sent it: the same libdatachannel, without
/// the two `addExtMap` calls that came with simulcast in 32.1.
fn obs_32_0(offer: &str) -> String {
    offer
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("a=extmap:"))
        .collect()
}

/// POST `offer` as OBS does and check the answer is one OBS goes on with:
/// `codec` for video, every offered rid received.
async fn post_as_obs(server: &TestServer, room: &str, offer: &str, codec_name: &str) -> TestResult {
    assert!(
        offer.ends_with("\r\n") && !offer.replace("\r\n", "").contains('\n'),
        "{room}: the offer must keep libdatachannel's CRLF line ends"
    );
    let token = server.token(room, "obs", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &token, offer).await;
    let answer = &posted.body;
    let ctx = format!("{room}: answer\n{answer}");
    assert_eq!(posted.status, 201, "{ctx}");
    assert!(posted.location.is_some(), "OBS needs a Location: {ctx}");

    // libdatachannel refuses an answer whose role is actpass.
    let setup = attrs(&answer.lines().collect::<Vec<_>>(), "setup");
    assert!(!setup.is_empty(), "{ctx}");
    assert!(
        setup.iter().all(|s| *s == "active" || *s == "passive"),
        "{ctx}"
    );

    let o_audio = section(offer, "audio");
    let o_video = section(offer, "video");
    let a_audio = section(answer, "audio");
    let a_video = section(answer, "video");

    // Both sections accepted, as receivers, under OBS's mids.
    for (kind, o, a, mid) in [
        ("audio", &o_audio, &a_audio, "0"),
        ("video", &o_video, &a_video, "1"),
    ] {
        assert!(port(a).is_some_and(|p| p != 0), "{kind} rejected: {ctx}");
        assert_eq!(attrs(a, "mid"), [mid], "{kind}: {ctx}");
        assert!(a.contains(&"a=recvonly"), "{kind} not recvonly: {ctx}");
        // Only formats and header extensions (at the same ids) that were
        // offered, and no TWCC feedback: OBS offers NACK, PLI and REMB.
        let offered = formats(o);
        for pt in formats(a) {
            assert!(
                offered.contains(&pt),
                "{kind}: format {pt} not offered: {ctx}"
            );
        }
        let offered_ext = extmaps(o);
        for ext in extmaps(a) {
            assert!(
                offered_ext.contains(&ext),
                "{kind}: extmap {ext:?} not offered: {ctx}"
            );
        }
        for fb in attrs(a, "rtcp-fb") {
            assert!(
                !fb.ends_with(" transport-cc"),
                "{kind}: rtcp-fb {fb}: {ctx}"
            );
        }
    }
    assert!(!answer.contains("transport-wide-cc"), "{ctx}");

    // The codecs at the payload types OBS sends.
    assert_eq!(formats(&a_audio).first(), Some(&OBS_AUDIO_PT), "{ctx}");
    assert_eq!(codec(&a_audio, OBS_AUDIO_PT), Some("opus"), "{ctx}");
    assert_eq!(formats(&a_video).first(), Some(&OBS_VIDEO_PT), "{ctx}");
    assert_eq!(codec(&a_video, OBS_VIDEO_PT), Some(codec_name), "{ctx}");

    // Simulcast: every rid received, in OBS's count too.
    let rids: Vec<&str> = attrs(&o_video, "rid")
        .into_iter()
        .filter_map(|r| r.strip_suffix(" send"))
        .collect();
    if rids.is_empty() {
        assert_eq!(obs_layers_accepted(answer), 0, "{ctx}");
    } else {
        assert_eq!(
            attrs(&a_video, "simulcast"),
            [format!("recv {}", rids.join(";")).as_str()],
            "{ctx}"
        );
        assert_eq!(obs_layers_accepted(answer), rids.len(), "{ctx}");
        for rid in &rids {
            let line = format!("a=rid:{rid} recv");
            assert!(a_video.contains(&line.as_str()), "no {line}: {ctx}");
        }
        // The layers are told apart by the rid header extension, at OBS's id.
        assert!(
            extmaps(&a_video).contains(&("2", "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")),
            "{ctx}"
        );
    }
    if !extmaps(&o_video).is_empty() {
        assert!(
            extmaps(&a_video).contains(&("1", "urn:ietf:params:rtp-hdrext:sdes:mid")),
            "{ctx}"
        );
    }
    Ok(())
}

/// `fixture` as OBS's Windows/macOS builds send it, then as its Flatpak does.
async fn check(name: &str, fixture: &str, codec_name: &str) -> TestResult {
    let server = TestServer::start(5);
    post_as_obs(&server, &format!("obs-{name}"), fixture, codec_name).await?;
    let room = format!("obs-{name}-flatpak");
    post_as_obs(&server, &room, &flatpak(fixture), codec_name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_h264() -> TestResult {
    check("h264", H264, "H264").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_32_0_h264() -> TestResult {
    let server = TestServer::start(5);
    post_as_obs(&server, "obs-32-0-h264", &obs_32_0(H264), "H264").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_h264_simulcast_3_layers() -> TestResult {
    check("h264-simulcast3", H264_SIMULCAST3, "H264").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_av1() -> TestResult {
    check("av1", AV1, "AV1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_av1_simulcast_3_layers() -> TestResult {
    check("av1-simulcast3", AV1_SIMULCAST3, "AV1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_hevc() -> TestResult {
    check("hevc", HEVC, "H265").await
}
