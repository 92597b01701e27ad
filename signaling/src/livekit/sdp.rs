//! The little SDP a LiveKit session needs to read and write: which media
//! sections a client's offer has (mid, kind, direction, the msid track id
//! that ties a sending section to its `add_track` cid), and the answer's
//! rewrite that names each receiving section's track the way LiveKit's
//! clients look it up (`a=msid:<PA_sid>|<TR_sid> <TR_sid>`), or sets it
//! `inactive` while it carries nothing.

use std::collections::BTreeMap;

use crate::room_protocol::MediaKindName;

/// Kind of a media section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    Audio,
    Video,
    Application,
}

impl From<MediaKindName> for SectionKind {
    fn from(kind: MediaKindName) -> SectionKind {
        match kind {
            MediaKindName::Audio => SectionKind::Audio,
            MediaKindName::Video => SectionKind::Video,
        }
    }
}

/// Direction of a section, as the offer states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One media section of a client's offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSection {
    pub mid: String,
    pub kind: SectionKind,
    pub direction: Direction,
    /// `m=... 0 ...` without `a=bundle-only`: rejected or stopped. (Port 0
    /// with `a=bundle-only` is a section bundled on the first one's
    /// transport, RFC 8843 section 7.3: Firefox offers its later sections so.)
    pub rejected: bool,
    /// The track id of its `a=msid` (a LiveKit client's `cid`).
    pub msid_track: Option<String>,
}

impl OfferSection {
    /// The client sends media on it.
    pub fn sends(&self) -> bool {
        !self.rejected && matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
    }

    /// The client can receive a track on it.
    pub fn receives(&self) -> bool {
        !self.rejected && matches!(self.direction, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// The media sections of an SDP, in order; sections without a mid are left
/// out (a bundled offer always has them).
pub fn offer_sections(sdp: &str) -> Vec<OfferSection> {
    let mut out = vec![];
    // The section being read, and its mid once seen.
    let mut current: Option<(OfferSection, bool)> = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            out.extend(
                current
                    .take()
                    .filter(|(_, has_mid)| *has_mid)
                    .map(|(s, _)| s),
            );
            let mut fields = m.split_whitespace();
            let kind = match fields.next() {
                Some("audio") => SectionKind::Audio,
                Some("video") => SectionKind::Video,
                _ => SectionKind::Application,
            };
            let section = OfferSection {
                mid: String::new(),
                kind,
                direction: Direction::SendRecv,
                rejected: fields.next() == Some("0"),
                msid_track: None,
            };
            current = Some((section, false));
            continue;
        }
        let Some((section, has_mid)) = current.as_mut() else {
            continue;
        };
        match line {
            "a=sendrecv" => section.direction = Direction::SendRecv,
            "a=sendonly" => section.direction = Direction::SendOnly,
            "a=recvonly" => section.direction = Direction::RecvOnly,
            "a=inactive" => section.direction = Direction::Inactive,
            "a=bundle-only" => section.rejected = false,
            _ => {
                if let Some(v) = line.strip_prefix("a=mid:") {
                    section.mid = v.trim().to_string();
                    *has_mid = true;
                } else if let Some(v) = line.strip_prefix("a=msid:") {
                    section.msid_track = v.split_whitespace().nth(1).map(str::to_string);
                }
            }
        }
    }
    out.extend(current.filter(|(_, has_mid)| *has_mid).map(|(s, _)| s));
    out
}

/// Who a receiving section carries: the publisher's and the track's sids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub participant: String,
    pub track: String,
}

/// Who each section of `carried` (mid -> track sid) carries, for
/// [`rewrite_answer`]; tracks whose publisher `publisher_of` does not know
/// are left out.
pub fn name_carried(
    carried: &BTreeMap<String, String>,
    publisher_of: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, Carried> {
    carried
        .iter()
        .filter_map(|(mid, track)| {
            let participant = publisher_of(track)?;
            Some((
                mid.clone(),
                Carried {
                    participant,
                    track: track.clone(),
                },
            ))
        })
        .collect()
}

/// Rewrite the server's answer for a LiveKit client: every section in
/// `carried` names its track `a=msid:<participant>|<track> <track>` (also
/// on its `a=ssrc:… msid:` lines); every section in `idle` (offered for
/// receiving, carrying nothing now) is answered `a=inactive` without
/// msid or ssrc lines, so that the client fires a new track when the
/// section later carries one.
pub fn rewrite_answer(
    answer: &str,
    carried: &BTreeMap<String, Carried>,
    idle: &[String],
) -> String {
    let mut out = String::with_capacity(answer.len() + 64 * carried.len());
    let mut section: Option<String> = None;
    let mut pending: Vec<&str> = vec![];
    // Lines of a section are buffered until its mid is known.
    let flush = |out: &mut String, lines: &mut Vec<&str>, mid: Option<&str>| {
        let carry = mid.and_then(|m| carried.get(m));
        let inactive = mid.is_some_and(|m| idle.iter().any(|i| i == m));
        for line in lines.drain(..) {
            let line = line.trim_end_matches('\r');
            if let Some(c) = carry {
                if line.starts_with("a=msid:") {
                    out.push_str(&format!(
                        "a=msid:{}|{} {}\r\n",
                        c.participant, c.track, c.track
                    ));
                    continue;
                }
                if let Some(rest) = line.strip_prefix("a=ssrc:") {
                    if let Some((ssrc, attr)) = rest.split_once(' ') {
                        if attr.starts_with("msid:") {
                            out.push_str(&format!(
                                "a=ssrc:{ssrc} msid:{}|{} {}\r\n",
                                c.participant, c.track, c.track
                            ));
                            continue;
                        }
                    }
                }
            } else if inactive {
                if line.starts_with("a=msid:")
                    || line.starts_with("a=ssrc:")
                    || line.starts_with("a=ssrc-group:")
                {
                    continue;
                }
                if matches!(line, "a=sendonly" | "a=sendrecv" | "a=recvonly") {
                    out.push_str("a=inactive\r\n");
                    continue;
                }
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
    };
    for line in answer.lines() {
        if line.starts_with("m=") {
            flush(&mut out, &mut pending, section.as_deref());
            section = None;
        } else if let Some(mid) = line.trim_end().strip_prefix("a=mid:") {
            section = Some(mid.trim().to_string());
        }
        pending.push(line);
    }
    flush(&mut out, &mut pending, section.as_deref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1 2 3\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\na=msid:stream cam-cid\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n\
m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:4\r\na=inactive\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:5\r\na=bundle-only\r\na=recvonly\r\n";

    #[test]
    fn an_offer_lists_its_sections_with_direction_and_cid() {
        let s = offer_sections(OFFER);
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].kind, SectionKind::Audio);
        assert!(s[0].receives() && !s[0].sends());
        assert!(s[1].receives());
        assert_eq!(s[2].msid_track.as_deref(), Some("cam-cid"));
        assert!(s[2].sends() && !s[2].receives());
        assert_eq!(s[3].kind, SectionKind::Application);
        assert!(s[4].rejected && !s[4].receives());
        assert!(
            !s[5].rejected && s[5].receives(),
            "bundle-only is not rejected"
        );
    }

    #[test]
    fn the_answer_names_carried_tracks_and_idles_the_rest() {
        let answer = "v=0\r\ns=-\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:abc def\r\n\
a=ssrc-group:FID 1 2\r\na=ssrc:1 cname:x\r\na=ssrc:1 msid:abc def\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:ghi jkl\r\na=ssrc:3 msid:ghi jkl\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n";
        let carried = BTreeMap::from([(
            "0".to_string(),
            Carried {
                participant: "PA_a".into(),
                track: "TR_b".into(),
            },
        )]);
        let out = rewrite_answer(answer, &carried, &["1".to_string()]);
        assert!(out.contains("a=mid:0\r\na=sendonly\r\na=msid:PA_a|TR_b TR_b\r\n"));
        assert!(out.contains("a=ssrc:1 msid:PA_a|TR_b TR_b\r\n"));
        assert!(out.contains("a=ssrc:1 cname:x\r\n"));
        let video = &out[out.find("a=mid:1").expect("mid 1")..];
        let video = &video[..video.find("m=").expect("next section")];
        assert_eq!(video, "a=mid:1\r\na=inactive\r\n");
        assert!(out.ends_with("a=mid:2\r\na=recvonly\r\n"));
        assert_eq!(offer_sections(&out)[1].direction, Direction::Inactive);
    }
}
