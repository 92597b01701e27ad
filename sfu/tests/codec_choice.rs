//! Which codecs a WHIP/WHEP answer puts first: the offerer's preference
//! (a sender uses the answer's first codec), and audio redundancy (RED,
//! RFC 2198) before Opus when the offer has it, so a browser sends RED.
//! Offers come from str0m peers configured like the clients they stand for.

mod common;

use common::{post_sdp, TestPeer, TestResult, TestServer};
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

/// The codec names of an answer's `kind` section, in its m-line's order.
fn section_codecs(sdp: &str, kind: &str) -> Vec<String> {
    let section: Vec<&str> = sdp
        .lines()
        .skip_while(|l| !l.starts_with(&format!("m={kind}")))
        .take_while(|l| !l.starts_with("m=") || l.starts_with(&format!("m={kind}")))
        .collect();
    let Some(m_line) = section.first() else {
        return vec![];
    };
    m_line
        .split_ascii_whitespace()
        .skip(3)
        .filter_map(|pt| {
            let prefix = format!("a=rtpmap:{pt} ");
            section
                .iter()
                .find_map(|l| l.strip_prefix(&prefix))
                .map(|m| m.split('/').next().unwrap_or("").to_string())
        })
        .collect()
}

fn publisher(config: RtcConfig) -> (TestPeer, String) {
    TestPeer::new(
        config,
        &[
            (MediaKind::Audio, Direction::SendOnly),
            (MediaKind::Video, Direction::SendOnly),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_follows_the_offerers_codec_preference_and_puts_red_first() -> TestResult {
    let server = TestServer::start(5);
    let whip = format!("{}/whip/codecs", server.base);
    let token = server.token("codecs", "p", true, false);

    // VP9 preferred (then VP8), RED offered: the answer lists VP9 first and
    // RED before Opus.
    let vp9_first = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, true)
        .enable_vp9(true)
        .enable_vp8(true);
    let (_a, offer) = publisher(vp9_first);
    assert_eq!(section_codecs(&offer, "video")[..2], ["VP9", "rtx"]);
    let posted = post_sdp(&whip, &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let video = section_codecs(&posted.body, "video");
    assert_eq!(video.first().map(String::as_str), Some("VP9"), "{video:?}");
    assert!(video.iter().any(|c| c == "VP8"), "{video:?}");
    let audio = section_codecs(&posted.body, "audio");
    assert_eq!(
        audio,
        ["red", "opus"],
        "RED first, as libwebrtc needs to send it"
    );

    // The same codecs the other way round, without RED: VP8 first, no RED.
    let vp8_first = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_vp9(true);
    let (_b, offer) = publisher(vp8_first);
    let posted = post_sdp(&whip, &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let video = section_codecs(&posted.body, "video");
    assert_eq!(video.first().map(String::as_str), Some("VP8"), "{video:?}");
    assert_eq!(section_codecs(&posted.body, "audio"), ["opus"]);
    Ok(())
}
