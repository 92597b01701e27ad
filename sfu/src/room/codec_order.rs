//! The order of formats in a member's offer and in the server's answer:
//! which codec a client sends with is the first of the answer's formats it
//! can send, so the order must carry the publisher's choice through str0m
//! (which answers in the session's configured order).

use std::borrow::Cow;

/// `offer` with the formats of the codec a line's publisher asked for
/// (`preferred(mid)`: a codec name such as `AV1`, or a mime type) moved to
/// the front of its `m=` line, with their retransmission formats; the rest
/// keep their order. LiveKit's clients name the codec in `add_track` and
/// leave the offer in the browser's order (VP8 first), counting on the
/// server's answer to put theirs first ([`answer_in_offered_order`] keeps
/// this order).
pub fn preferred_codecs_first<'a>(
    offer: &'a str,
    preferred: impl Fn(&str) -> Option<&'a str>,
) -> Cow<'a, str> {
    let lines: Vec<&str> = offer.split_inclusive('\n').collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("m="))
        .chain([lines.len()])
        .collect();
    let mut out = String::with_capacity(offer.len());
    let mut changed = false;
    out.extend(lines[..starts[0]].iter().copied());
    for w in starts.windows(2) {
        let section = &lines[w[0]..w[1]];
        let attr = |prefix: &'static str| {
            section
                .iter()
                .filter_map(move |l| l.trim().strip_prefix("a=")?.strip_prefix(prefix))
        };
        let codec = attr("mid:")
            .next()
            .and_then(|mid| preferred(mid.trim()))
            .map(|c| c.rsplit('/').next().unwrap_or(c));
        let Some(codec) = codec else {
            out.extend(section.iter().copied());
            continue;
        };
        // Its formats: by rtpmap name, and the rtx formats whose apt is one.
        let mut wanted: Vec<&str> = attr("rtpmap:")
            .filter_map(|m| m.split_once(' '))
            .filter(|(_, name)| {
                name.split('/')
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case(codec))
            })
            .map(|(pt, _)| pt)
            .collect();
        let repairs: Vec<&str> = attr("fmtp:")
            .filter_map(|f| f.split_once(' '))
            .filter(|(_, params)| {
                params
                    .trim()
                    .strip_prefix("apt=")
                    .is_some_and(|apt| wanted.contains(&apt))
            })
            .map(|(pt, _)| pt)
            .collect();
        wanted.extend(repairs);
        let m_line = section[0];
        let reordered = formats_sorted_by(m_line, |pt| usize::from(!wanted.contains(&pt)));
        changed |= reordered != m_line;
        out.push_str(&reordered);
        out.extend(section[1..].iter().copied());
    }
    match changed {
        true => Cow::Owned(out),
        false => Cow::Borrowed(offer),
    }
}

/// `answer` with each media section's formats (its `m=` line) in the order
/// the offer's section lists them. A sender sends with the first format of
/// the answer it can, so the offerer's preference must survive: a
/// livekit-client member publishing AV1 (its codec preference AV1 first)
/// was answered VP8 first and sent VP8. str0m answers in the session's
/// configured order, which for a room member is fixed before its first
/// offer. Sections pair up by position (RFC 3264).
pub fn answer_in_offered_order(answer: &str, offer: &str) -> String {
    let offered: Vec<Vec<&str>> = offer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("m="))
        .map(|m| m.split_ascii_whitespace().skip(3).collect())
        .collect();
    let mut section = 0;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        if !line.starts_with("m=") {
            out.push_str(line);
            continue;
        }
        match offered.get(section) {
            Some(order) => out.push_str(&formats_sorted_by(line, |pt| {
                order.iter().position(|o| *o == pt).unwrap_or(usize::MAX)
            })),
            None => out.push_str(line),
        }
        section += 1;
    }
    out
}

/// An `m=` line (with its line ending) whose formats are stably sorted by
/// `rank`; the media, port and protocol stay first.
fn formats_sorted_by(m_line: &str, rank: impl Fn(&str) -> usize) -> String {
    let text = m_line.trim_end();
    let mut parts: Vec<&str> = text.split_ascii_whitespace().collect();
    if let Some(formats) = parts.get_mut(3..) {
        formats.sort_by_key(|pt| rank(pt));
    }
    format!("{}{}", parts.join(" "), &m_line[text.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_the_offered_order_of_formats() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 45 46 96 97 98\r\na=mid:1\r\n";
        // str0m's order (VP8 96/97 first), and a format the offer lacks.
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 99 45 46\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(
            answer_in_offered_order(answer, offer),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 45 46 96 97 99\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
        );
        // A section the offer does not have is left as it is.
        let more = format!("{answer}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        assert!(answer_in_offered_order(&more, offer)
            .ends_with("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
    }

    #[test]
    fn the_codec_a_publisher_asked_for_goes_first_in_its_line() {
        let offer =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 45 46 98\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
            a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:45 AV1/90000\r\n\
            a=rtpmap:46 rtx/90000\r\na=fmtp:46 apt=45\r\na=rtpmap:98 VP9/90000\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 45 46\r\na=mid:2\r\na=rtpmap:96 VP8/90000\r\n";
        let first = preferred_codecs_first(offer, |mid| (mid == "1").then_some("video/av1"));
        assert!(
            first.contains("m=video 9 UDP/TLS/RTP/SAVPF 45 46 96 97 98\r\na=mid:1"),
            "{first}"
        );
        // Other lines as they were, and everything else.
        assert!(first.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97 45 46\r\na=mid:2"));
        assert_eq!(first.len(), offer.len());
        // Nothing asked for, or a codec the line lacks: the offer itself.
        assert!(matches!(
            preferred_codecs_first(offer, |_| None),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            preferred_codecs_first(offer, |_| Some("video/H265")),
            Cow::Borrowed(_)
        ));
    }
}
