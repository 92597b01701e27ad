//! Offer and answer checks that turn "str0m accepted something" into a clear
//! answer for the client: a WHIP offer must send audio or video, a WHEP
//! offer must receive it, the number of media lines is bounded, and an
//! answer that would carry nothing — or would drop a section the client
//! offered because none of its codecs is supported — is rejected (422,
//! naming the codecs on both sides) instead of returned.

use signaling::room_protocol::ErrorCode;
use signaling::SessionKind;

/// Most media sections accepted in one offer.
pub const MAX_MEDIA_SECTIONS: usize = 16;

/// One media section of an SDP, as far as these checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: String,
    /// Port 0 without `a=bundle-only` (a port-0 section that is bundle-only
    /// rides the bundle's transport, RFC 8843 section 7.3; Firefox offers so).
    pub rejected: bool,
    pub direction: String,
    pub mid: Option<String>,
    /// Transport-wide congestion control feedback is negotiable.
    pub twcc: bool,
    /// REMB feedback (`goog-remb`) is negotiable.
    pub remb: bool,
    /// The media codecs of its `a=rtpmap` lines in the order of its `m=`
    /// line, the offerer's preference (repair formats: rtx, red, ulpfec,
    /// flexfec, left out).
    pub codecs: Vec<String>,
}

impl MediaSection {
    fn is_av(&self) -> bool {
        self.kind == "audio" || self.kind == "video"
    }
    pub fn sends(&self) -> bool {
        matches!(self.direction.as_str(), "sendonly" | "sendrecv")
    }
    pub fn receives(&self) -> bool {
        matches!(self.direction.as_str(), "recvonly" | "sendrecv")
    }
}

/// Split an SDP into its media sections (direction defaults to sendrecv).
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut sections: Vec<MediaSection> = vec![];
    // Per section: the formats of its m= line, and (format, codec) pairs
    // of its rtpmap lines; `codecs` is put in the m= line's order at the end.
    type Formats<'a> = (Vec<&'a str>, Vec<(&'a str, String)>);
    let mut formats: Vec<Formats> = vec![];
    let mut session_direction = "sendrecv".to_string();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_ascii_whitespace();
            let kind = parts.next().unwrap_or("").to_string();
            let rejected = parts.next() == Some("0");
            formats.push((parts.skip(1).collect(), vec![]));
            sections.push(MediaSection {
                kind,
                rejected,
                direction: session_direction.clone(),
                mid: None,
                twcc: false,
                remb: false,
                codecs: vec![],
            });
        } else if let Some(attr) = line.strip_prefix("a=") {
            if let (Some(s), true) = (
                sections.last_mut(),
                attr.starts_with("rtcp-fb:") || attr.starts_with("extmap:"),
            ) {
                s.twcc |= attr.ends_with(" transport-cc") || attr.contains("transport-wide-cc");
                s.remb |= attr.ends_with(" goog-remb");
            }
            if let (Some((_, mapped)), Some(map)) =
                (formats.last_mut(), attr.strip_prefix("rtpmap:"))
            {
                let mut parts = map.split_ascii_whitespace();
                let pt = parts.next().unwrap_or("");
                let name = parts.next().unwrap_or("").split('/').next().unwrap_or("");
                let repair = ["rtx", "red", "ulpfec", "flexfec-03"];
                if !name.is_empty() && !repair.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                    mapped.push((pt, name.to_string()));
                }
            }
            if let Some(mid) = attr.strip_prefix("mid:") {
                if let Some(s) = sections.last_mut() {
                    s.mid = Some(mid.trim().to_string());
                }
            } else if attr == "bundle-only" {
                if let Some(s) = sections.last_mut() {
                    s.rejected = false;
                }
            } else if matches!(attr, "sendonly" | "recvonly" | "sendrecv" | "inactive") {
                match sections.last_mut() {
                    Some(s) => s.direction = attr.to_string(),
                    None => session_direction = attr.to_string(),
                }
            }
        }
    }
    for (s, (order, mut mapped)) in sections.iter_mut().zip(formats) {
        // Unlisted formats (a malformed m= line) after the listed ones.
        mapped.sort_by_key(|(pt, _)| order.iter().position(|o| o == pt).unwrap_or(usize::MAX));
        for (_, name) in mapped {
            if !s.codecs.contains(&name) {
                s.codecs.push(name);
            }
        }
    }
    sections
}

/// Why an SDP that str0m could not parse is malformed, for the client:
/// a payload type mapped twice in one section is named; otherwise the
/// parser's own words, without the memory address it appends.
pub fn parse_failure(sdp: &str, parser_error: &str) -> String {
    let mut kind = "session";
    let mut seen: Vec<(&str, &str)> = vec![];
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split_ascii_whitespace().next().unwrap_or("media");
            seen.clear();
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut parts = map.split_ascii_whitespace();
            let (pt, codec) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if let Some((_, first)) = seen.iter().find(|(p, _)| *p == pt) {
                return format!(
                    "payload type {pt} is mapped twice in the {kind} section ({first} and {codec})"
                );
            }
            seen.push((pt, codec));
        }
    }
    let plain = parser_error
        .split(" at PointerOffset")
        .next()
        .unwrap_or(parser_error);
    format!("the SDP does not parse ({plain})")
}

/// Check an offer before it is applied. The error text goes to the client.
pub fn check_offer(kind: SessionKind, sdp: &str) -> Result<(), String> {
    let sections = media_sections(sdp);
    if sections.is_empty() {
        return Err("the offer has no media sections (m= lines)".into());
    }
    if sections.len() > MAX_MEDIA_SECTIONS {
        return Err(format!(
            "the offer has {} media sections; at most {MAX_MEDIA_SECTIONS} are accepted",
            sections.len()
        ));
    }
    let usable = sections.iter().filter(|s| s.is_av() && !s.rejected);
    let ok = match kind {
        SessionKind::Whip => usable.clone().any(MediaSection::sends),
        SessionKind::Whep => usable.clone().any(MediaSection::receives),
        SessionKind::Room => true,
    };
    if !ok {
        return Err(match kind {
            SessionKind::Whip => {
                "a WHIP offer must send audio or video (sendonly or sendrecv)".into()
            }
            SessionKind::Whep | SessionKind::Room => {
                "a WHEP offer must receive audio or video (recvonly or sendrecv)".into()
            }
        });
    }
    Ok(())
}

/// Check that the answer serves every audio/video section of the offer
/// that carries media the session needs (a WHIP offer's sending sections,
/// a WHEP offer's receiving ones): a section answered with port 0 had no
/// codec the server supports, and a session that silently lost its video
/// is worse than a clear refusal. `supported(kind)` names the server's
/// codecs of a kind. Sections pair up by position (RFC 3264).
pub fn check_served(
    kind: SessionKind,
    offer: &str,
    answer: &str,
    supported: impl Fn(&str) -> Vec<String>,
) -> Result<(), String> {
    let answered = media_sections(answer);
    for (i, offered) in media_sections(offer).iter().enumerate() {
        let needed = offered.is_av()
            && !offered.rejected
            && match kind {
                SessionKind::Whip => offered.sends(),
                SessionKind::Whep => offered.receives(),
                SessionKind::Room => false,
            };
        if !needed || answered.get(i).is_some_and(|a| !a.rejected) {
            continue;
        }
        let what = match &offered.mid {
            Some(mid) => format!("the offer's {} section (mid {mid})", offered.kind),
            None => format!("the offer's {} section", offered.kind),
        };
        let listed = |names: &[String]| match names.is_empty() {
            true => "none".to_string(),
            false => names.join(", "),
        };
        return Err(format!(
            "{what} has no codec this server supports: offered {}; supported {} codecs: {}",
            listed(&offered.codecs),
            offered.kind,
            listed(&supported(&offered.kind)),
        ));
    }
    Ok(())
}

/// Video lines the peer sends whose congestion feedback can only be REMB
/// (no transport-cc): the server must send REMB so the sender's estimate
/// can grow (and upper simulcast layers start).
pub fn remb_only_video_mids(sdp: &str) -> Vec<String> {
    media_sections(sdp)
        .into_iter()
        .filter(|s| s.kind == "video" && s.sends() && !s.rejected && s.remb && !s.twcc)
        .filter_map(|s| s.mid)
        .collect()
}

/// Most media sections in a conference participant's offer (its own
/// tracks plus one line per track it receives).
pub const MAX_ROOM_MEDIA_SECTIONS: usize = 256;

/// Check a conference participant's offer: within the section limit,
/// publishing only with `canPublish`, at most `max_tracks` sending lines.
pub fn check_room_offer(
    sdp: &str,
    can_publish: bool,
    max_tracks: usize,
) -> Result<(), (ErrorCode, String)> {
    let sections = media_sections(sdp);
    if sections.is_empty() {
        return Err((
            ErrorCode::Negotiation,
            "the offer has no media sections (m= lines)".into(),
        ));
    }
    if sections.len() > MAX_ROOM_MEDIA_SECTIONS {
        return Err((
            ErrorCode::Limit,
            format!(
                "the offer has {} media sections; at most {MAX_ROOM_MEDIA_SECTIONS} are accepted",
                sections.len()
            ),
        ));
    }
    let sending = sections
        .iter()
        .filter(|s| s.is_av() && !s.rejected && s.sends())
        .count();
    if sending > 0 && !can_publish {
        return Err((
            ErrorCode::NotAllowed,
            "your token does not grant canPublish; offer only recvonly media".into(),
        ));
    }
    if sending > max_tracks {
        return Err((
            ErrorCode::Limit,
            format!("the offer publishes {sending} tracks; at most {max_tracks} per participant"),
        ));
    }
    Ok(())
}

/// Check the answer: at least one audio/video section must be active,
/// otherwise none of the offered codecs is supported.
pub fn check_answer(answer: &str, supported: &[String]) -> Result<(), String> {
    let active = media_sections(answer)
        .iter()
        .any(|s| s.is_av() && !s.rejected && s.direction != "inactive");
    if active {
        Ok(())
    } else {
        Err(format!(
            "none of the offered codecs is supported (supported: {})",
            supported.join(", ")
        ))
    }
}

/// `answer` with all its media in one media stream (`a=msid` stream id,
/// also in `a=ssrc … msid:` and `a=msid-semantic`): a WHEP player's audio
/// and video belong together, and players that take `event.streams[0]` for
/// their video element otherwise play no sound (str0m gives each answered
/// line a stream id of its own).
pub fn one_media_stream(answer: &str) -> String {
    let Some(common) = answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=msid:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .map(str::to_string)
    else {
        return answer.to_string();
    };
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let (text, end) = match line.find(['\r', '\n']) {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        let replaced = if let Some(v) = text.strip_prefix("a=msid:") {
            let track = v.split_ascii_whitespace().nth(1).unwrap_or("");
            format!("a=msid:{common} {track}")
        } else if text.starts_with("a=msid-semantic:") {
            format!("a=msid-semantic: WMS {common}")
        } else if let (true, Some(at)) = (text.starts_with("a=ssrc:"), text.find(" msid:")) {
            let track = text[at + 6..].split_ascii_whitespace().nth(1).unwrap_or("");
            format!("{} msid:{common} {track}", &text[..at])
        } else {
            text.to_string()
        };
        out.push_str(replaced.trim_end());
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gets_one_media_stream() {
        let answer = "v=0\r\na=msid-semantic: WMS aaa bbb\r\nm=audio 9 X 111\r\n\
            a=msid:aaa t1\r\na=ssrc:1 msid:aaa t1\r\nm=video 9 X 96\r\n\
            a=msid:bbb t2\r\na=ssrc:2 cname:x\r\na=ssrc:2 msid:bbb t2\r\n";
        let one = one_media_stream(answer);
        assert_eq!(
            one,
            "v=0\r\na=msid-semantic: WMS aaa\r\nm=audio 9 X 111\r\n\
            a=msid:aaa t1\r\na=ssrc:1 msid:aaa t1\r\nm=video 9 X 96\r\n\
            a=msid:aaa t2\r\na=ssrc:2 cname:x\r\na=ssrc:2 msid:aaa t2\r\n"
        );
        assert_eq!(one_media_stream("v=0\r\n"), "v=0\r\n");
    }

    const WHIP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";

    #[test]
    fn whip_needs_sending_media() {
        assert!(check_offer(SessionKind::Whip, WHIP_OFFER).is_ok());
        assert!(check_offer(SessionKind::Whep, WHIP_OFFER).is_err());
        let recv = WHIP_OFFER.replace("sendonly", "recvonly");
        assert!(check_offer(SessionKind::Whep, &recv).is_ok());
        assert!(check_offer(SessionKind::Whip, &recv).is_err());
    }

    #[test]
    fn a_bundle_only_section_at_port_zero_is_not_rejected() {
        let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=bundle-only\r\na=sendonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=inactive\r\n";
        let s = media_sections(sdp);
        assert!(!s[1].rejected, "bundled on the first section's transport");
        assert!(s[2].rejected, "port 0 alone: rejected");
    }

    #[test]
    fn rejects_empty_and_oversized() {
        assert!(check_offer(SessionKind::Whip, "v=0\r\n").is_err());
        let many = "m=audio 9 X 0\r\na=sendonly\r\n".repeat(MAX_MEDIA_SECTIONS + 1);
        assert!(check_offer(SessionKind::Whip, &many).is_err_and(|e| e.contains("at most")));
        let data_only = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert!(check_offer(SessionKind::Whip, data_only).is_err());
    }

    #[test]
    fn room_offers_respect_grants_and_track_limits() {
        assert!(check_room_offer(WHIP_OFFER, true, 8).is_ok());
        let e = check_room_offer(WHIP_OFFER, false, 8).unwrap_err();
        assert_eq!(e.0, ErrorCode::NotAllowed);
        let e = check_room_offer(WHIP_OFFER, true, 1).unwrap_err();
        assert_eq!(e.0, ErrorCode::Limit);
        let recv = WHIP_OFFER.replace("sendonly", "recvonly");
        assert!(
            check_room_offer(&recv, false, 1).is_ok(),
            "receiving needs no publish grant"
        );
        let data_only = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";
        assert!(check_room_offer(data_only, false, 1).is_ok());
        assert_eq!(media_sections(data_only)[0].mid.as_deref(), Some("0"));
    }

    #[test]
    fn finds_video_lines_that_only_have_remb() {
        let sdp = "v=0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\na=rtcp-fb:96 goog-remb\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=rtcp-fb:96 goog-remb\r\n\
            a=rtcp-fb:96 transport-cc\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\na=rtcp-fb:96 goog-remb\r\n";
        assert_eq!(remb_only_video_mids(sdp), vec!["0".to_string()]);
    }

    #[test]
    fn answer_must_carry_media() {
        let supported = ["opus".to_string(), "VP8".to_string()];
        assert!(check_answer(WHIP_OFFER, &supported).is_ok());
        let refused = check_answer(&WHIP_OFFER.replace("sendonly", "inactive"), &supported);
        assert_eq!(
            refused,
            Err("none of the offered codecs is supported (supported: opus, VP8)".to_string())
        );
        assert!(check_answer(&WHIP_OFFER.replace(" 9 ", " 0 "), &supported).is_err());
    }

    fn supported(kind: &str) -> Vec<String> {
        match kind {
            "audio" => vec!["opus".into()],
            _ => vec!["VP8".into(), "H264".into()],
        }
    }

    const H263_VIDEO: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 34 35\r\na=mid:1\r\na=sendonly\r\n\
        a=rtpmap:34 H263/90000\r\na=rtpmap:35 rtx/90000\r\n";

    #[test]
    fn a_section_dropped_for_its_codecs_is_refused_with_both_lists() {
        // The answer kept the audio and rejected the video (port 0).
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 0\r\na=inactive\r\n";
        let err = check_served(SessionKind::Whip, H263_VIDEO, answer, supported)
            .expect_err("video dropped");
        assert!(err.contains("video section (mid 1)"), "{err}");
        assert!(err.contains("offered H263;"), "{err}");
        assert!(err.contains("supported video codecs: VP8, H264"), "{err}");
        // Both served: fine.
        let both = answer.replace("m=video 0", "m=video 9");
        assert!(check_served(SessionKind::Whip, H263_VIDEO, &both, supported).is_ok());
        // A section the session does not need (a WHIP offer's receiving
        // line) may go unanswered.
        let recv = H263_VIDEO.replace("a=mid:1\r\na=sendonly", "a=mid:1\r\na=recvonly");
        assert!(check_served(SessionKind::Whip, &recv, answer, supported).is_ok());
        let err = check_served(SessionKind::Whep, &recv, answer, supported)
            .expect_err("a viewer's video dropped");
        assert!(err.contains("offered H263;"), "{err}");
    }

    #[test]
    fn codec_names_skip_repair_formats_and_repeats() {
        let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=rtpmap:98 H264/90000\r\n\
            a=rtpmap:99 H264/90000\r\na=rtpmap:100 red/90000\r\na=rtpmap:bogus\r\n";
        assert_eq!(media_sections(sdp)[0].codecs, vec!["VP8", "H264"]);
        // In the m= line's order (the offerer's preference), whatever the
        // order of the rtpmap lines.
        let av1_first = sdp.replace("SAVPF 96 97 98", "SAVPF 98 96 97");
        assert_eq!(media_sections(&av1_first)[0].codecs, vec!["H264", "VP8"]);
    }

    #[test]
    fn a_parse_failure_names_a_doubly_mapped_payload_type_or_drops_the_address() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:96 H264/90000\r\n";
        assert_eq!(
            parse_failure(sdp, "x"),
            "payload type 96 is mapped twice in the video section (VP8/90000 and H264/90000)"
        );
        assert_eq!(
            parse_failure("v=0\r\n", "SDP parse: Parse error at PointerOffset(0x7f19)"),
            "the SDP does not parse (SDP parse: Parse error)"
        );
    }
}
