//! Parser for `application/trickle-ice-sdpfrag` bodies (RFC 8840), as sent
//! in WHIP/WHEP PATCH requests for trickle ICE and ICE restarts.
//!
//! Only what the server acts on is kept: ICE credentials, candidates (with the
//! media line they belong to) and end-of-candidates. Everything else is
//! ignored, as RFC 8840 allows. Input is untrusted: no panics, bounded work.

/// Upper bound on candidate lines in one fragment.
pub const MAX_CANDIDATES: usize = 64;

/// A parsed SDP fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    /// Candidate attribute values without the `a=` prefix
    /// (e.g. `candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host`).
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
    /// Media ids in order of their `a=mid` lines.
    pub mids: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SdpFragError {
    #[error("line {0} is not an SDP line (expected `x=...`)")]
    NotSdpLine(usize),
    #[error("more than {MAX_CANDIDATES} candidates")]
    TooManyCandidates,
    #[error("conflicting ice-ufrag values")]
    ConflictingUfrag,
    #[error("ice-ufrag without ice-pwd (or the reverse)")]
    IncompleteCredentials,
    #[error("malformed candidate on line {0}")]
    BadCandidate(usize),
}

impl SdpFrag {
    /// Parse a fragment body.
    pub fn parse(body: &str) -> Result<SdpFrag, SdpFragError> {
        let mut frag = SdpFrag::default();
        for (index, raw) in body.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim_end_matches('\r').trim();
            if line.is_empty() {
                continue;
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(SdpFragError::NotSdpLine(line_no));
            }
            let Some(attr) = line.strip_prefix("a=") else {
                continue; // m=, c=, etc. carry nothing we act on
            };
            if let Some(v) = attr.strip_prefix("ice-ufrag:") {
                let v = v.trim().to_string();
                if frag.ice_ufrag.as_ref().is_some_and(|u| *u != v) {
                    return Err(SdpFragError::ConflictingUfrag);
                }
                frag.ice_ufrag = Some(v);
            } else if let Some(v) = attr.strip_prefix("ice-pwd:") {
                frag.ice_pwd = Some(v.trim().to_string());
            } else if let Some(v) = attr.strip_prefix("mid:") {
                frag.mids.push(v.trim().to_string());
            } else if attr.starts_with("candidate:") {
                // foundation component transport priority address port "typ" type
                if attr.split_ascii_whitespace().count() < 8 {
                    return Err(SdpFragError::BadCandidate(line_no));
                }
                if frag.candidates.len() >= MAX_CANDIDATES {
                    return Err(SdpFragError::TooManyCandidates);
                }
                frag.candidates.push(attr.to_string());
            } else if attr == "end-of-candidates" {
                frag.end_of_candidates = true;
            }
        }
        if frag.ice_ufrag.is_some() != frag.ice_pwd.is_some() {
            return Err(SdpFragError::IncompleteCredentials);
        }
        Ok(frag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc8840_example() -> Result<(), SdpFragError> {
        let body = "a=ice-options:trickle ice2\r\na=group:BUNDLE 0 1\r\nm=audio 9 RTP/AVP 0\r\n\
                    a=mid:0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw\r\n\
                    a=end-of-candidates\r\n";
        let f = SdpFrag::parse(body)?;
        assert_eq!(f.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.ice_pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.candidates[0].starts_with("candidate:1387637174 1 udp"));
        assert!(f.end_of_candidates);
        assert_eq!(f.mids, vec!["0".to_string()]);
        Ok(())
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(SdpFrag::parse("hello"), Err(SdpFragError::NotSdpLine(1)));
        assert_eq!(
            SdpFrag::parse("a=ice-ufrag:x\n"),
            Err(SdpFragError::IncompleteCredentials)
        );
        assert_eq!(
            SdpFrag::parse("a=candidate:1 1 udp\n"),
            Err(SdpFragError::BadCandidate(1))
        );
        assert_eq!(
            SdpFrag::parse("a=ice-ufrag:x\na=ice-pwd:y\na=ice-ufrag:z\n"),
            Err(SdpFragError::ConflictingUfrag)
        );
        let many: String = (0..=MAX_CANDIDATES)
            .map(|i| format!("a=candidate:{i} 1 udp 1 127.0.0.1 {i} typ host\n"))
            .collect();
        assert_eq!(SdpFrag::parse(&many), Err(SdpFragError::TooManyCandidates));
        // multibyte input must not panic
        assert!(SdpFrag::parse("é=ü\n").is_err());
    }
}
