//! The join URL of LiveKit's two signalling modes, parsed into what a join
//! (or a resume) needs, with an error that says what was wrong.
//!
//! - Single peer connection (`/rtc/v1`, the SDKs' default): the client's
//!   `JoinRequest` travels in the `join_request` query parameter as a
//!   base64url `WrappedJoinRequest` (padded or not), usually gzip'd, and
//!   carries the client's first offer.
//! - Dual peer connection (`/rtc`, LiveKit's fallback and its Go SDK and
//!   load tester): the same facts as query parameters (`protocol`, `sdk`,
//!   `auto_subscribe`, `reconnect`, `sid`, ...).
//!
//! The access token comes as `access_token` (JS) or `Authorization: Bearer`
//! (the Rust/Python and Go SDKs send only the header).

use std::collections::HashMap;
use std::io::Read;

use base64::engine::general_purpose::GeneralPurposeConfig;
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine;
use prost::Message;

use super::proto;

/// Longest `join_request` parameter accepted (characters). A join request
/// carries the client's first offer: 3+3 receive sections, its senders and
/// a data channel, a few KB gzip'd.
pub const MAX_JOIN_REQUEST_CHARS: usize = 64 * 1024;
/// Largest join request after decompression (bytes): bounds a gzip bomb.
pub const MAX_JOIN_REQUEST_BYTES: usize = 1024 * 1024;

/// Which of LiveKit's signalling modes a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/rtc/v1`: one peer connection, the client always offers.
    SinglePeerConnection,
    /// `/rtc`: a publisher connection the client offers on and a
    /// subscriber connection the server offers on.
    DualPeerConnection,
}

/// What a client's join URL says.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinParams {
    pub mode: Mode,
    pub token: String,
    /// The client's join request (for `/rtc`, built from the query).
    pub request: proto::JoinRequest,
}

impl JoinParams {
    /// A resume of an existing session (`reconnect`), not a new join.
    pub fn is_reconnect(&self) -> bool {
        self.request.reconnect
    }

    pub fn auto_subscribe(&self) -> bool {
        self.request
            .connection_settings
            .as_ref()
            .is_none_or(|c| c.auto_subscribe)
    }
}

/// Why a join URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("no access token: pass access_token=<JWT> or an Authorization: Bearer header")]
    MissingToken,
    #[error("single peer connection signalling needs a join_request parameter")]
    MissingJoinRequest,
    #[error("join_request is longer than {MAX_JOIN_REQUEST_CHARS} characters")]
    JoinRequestTooLong,
    #[error("join_request is not base64url: {0}")]
    Base64(String),
    #[error("join_request is not a WrappedJoinRequest protobuf: {0}")]
    Wrapper(String),
    #[error("join_request does not decompress (gzip): {0}")]
    Gzip(String),
    #[error("join_request decompresses to more than {MAX_JOIN_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("join_request is not a JoinRequest protobuf: {0}")]
    JoinRequest(String),
    #[error("query parameter {name} is not {expected}: {value:?}")]
    BadParameter {
        name: &'static str,
        expected: &'static str,
        value: String,
    },
}

/// The token from the query or the `Authorization` header value.
pub fn token(
    query: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<String, JoinError> {
    if let Some(t) = query.get("access_token").filter(|t| !t.is_empty()) {
        return Ok(t.clone());
    }
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or(JoinError::MissingToken)
}

/// `/rtc/v1?access_token=…&join_request=…`.
pub fn single_pc(
    query: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<JoinParams, JoinError> {
    let token = token(query, authorization)?;
    let raw = query
        .get("join_request")
        .ok_or(JoinError::MissingJoinRequest)?;
    Ok(JoinParams {
        mode: Mode::SinglePeerConnection,
        token,
        request: decode_join_request(raw)?,
    })
}

/// `/rtc?access_token=…&protocol=…&auto_subscribe=…&reconnect=…&sid=…`.
pub fn dual_pc(
    query: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<JoinParams, JoinError> {
    let token = token(query, authorization)?;
    let protocol = int_param(query, "protocol")?.unwrap_or(0);
    let reconnect = bool_param(query, "reconnect")?.unwrap_or(false);
    let auto_subscribe = bool_param(query, "auto_subscribe")?.unwrap_or(true);
    let adaptive_stream = bool_param(query, "adaptive_stream")?.unwrap_or(false);
    let reconnect_reason = int_param(query, "reconnect_reason")?.unwrap_or(0);
    let sdk = match query.get("sdk").map(String::as_str) {
        Some("js") => proto::client_info::Sdk::Js,
        Some("go") => proto::client_info::Sdk::Go,
        Some("rust") => proto::client_info::Sdk::Rust,
        Some("python") => proto::client_info::Sdk::Python,
        Some("swift") => proto::client_info::Sdk::Swift,
        Some("android") => proto::client_info::Sdk::Android,
        Some("flutter") => proto::client_info::Sdk::Flutter,
        Some("unity") => proto::client_info::Sdk::Unity,
        Some("reactnative") => proto::client_info::Sdk::ReactNative,
        _ => proto::client_info::Sdk::Unknown,
    };
    let request = proto::JoinRequest {
        client_info: Some(proto::ClientInfo {
            sdk: sdk as i32,
            protocol,
            version: query.get("version").cloned().unwrap_or_default(),
            ..Default::default()
        }),
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe,
            adaptive_stream,
            ..Default::default()
        }),
        reconnect,
        reconnect_reason,
        participant_sid: query.get("sid").cloned().unwrap_or_default(),
        ..Default::default()
    };
    Ok(JoinParams {
        mode: Mode::DualPeerConnection,
        token,
        request,
    })
}

/// Whether a `/rtc` request is LiveKit's (every LiveKit SDK sends
/// `protocol`; the project's JSON room protocol does not).
pub fn is_livekit_query(query: &HashMap<String, String>) -> bool {
    query.contains_key("protocol")
}

/// base64url (padding optional) -> `WrappedJoinRequest` -> (gunzip) ->
/// `JoinRequest`, every step bounded.
pub fn decode_join_request(raw: &str) -> Result<proto::JoinRequest, JoinError> {
    if raw.len() > MAX_JOIN_REQUEST_CHARS {
        return Err(JoinError::JoinRequestTooLong);
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(raw.trim())
        .map_err(|e| JoinError::Base64(e.to_string()))?;
    let wrapped = proto::WrappedJoinRequest::decode(bytes.as_slice())
        .map_err(|e| JoinError::Wrapper(e.to_string()))?;
    let inner = match proto::wrapped_join_request::Compression::try_from(wrapped.compression) {
        Ok(proto::wrapped_join_request::Compression::Gzip) => gunzip(&wrapped.join_request)?,
        Ok(proto::wrapped_join_request::Compression::None) => wrapped.join_request,
        Err(_) => {
            return Err(JoinError::Wrapper(format!(
                "unknown compression {}",
                wrapped.compression
            )))
        }
    };
    proto::JoinRequest::decode(inner.as_slice()).map_err(|e| JoinError::JoinRequest(e.to_string()))
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, JoinError> {
    let mut out = Vec::new();
    let limit = (MAX_JOIN_REQUEST_BYTES + 1) as u64;
    flate2::read::GzDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| JoinError::Gzip(e.to_string()))?;
    if out.len() > MAX_JOIN_REQUEST_BYTES {
        return Err(JoinError::TooLarge);
    }
    Ok(out)
}

fn int_param(
    query: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<i32>, JoinError> {
    query
        .get(name)
        .map(|v| {
            v.parse().map_err(|_| JoinError::BadParameter {
                name,
                expected: "an integer",
                value: v.clone(),
            })
        })
        .transpose()
}

fn bool_param(
    query: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<bool>, JoinError> {
    query
        .get(name)
        .map(|v| match v.as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(JoinError::BadParameter {
                name,
                expected: "1, 0, true or false",
                value: v.clone(),
            }),
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What livekit-client 2.23 puts in `join_request`: gzip, base64url
    /// with `=` padding (JS swaps `+/` only).
    fn js_join_request(jr: &proto::JoinRequest) -> String {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&jr.encode_to_vec()).expect("gzip");
        let wrapped = proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::Gzip as i32,
            join_request: gz.finish().expect("gzip"),
        };
        base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec())
    }

    fn sample() -> proto::JoinRequest {
        proto::JoinRequest {
            client_info: Some(proto::ClientInfo {
                sdk: proto::client_info::Sdk::Js as i32,
                version: "2.23.0".into(),
                protocol: 17,
                client_protocol: 2,
                ..Default::default()
            }),
            connection_settings: Some(proto::ConnectionSettings {
                auto_subscribe: true,
                ..Default::default()
            }),
            publisher_offer: Some(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: "v=0\r\n".into(),
                id: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_js_join_request_decodes_padded_or_not() {
        let raw = js_join_request(&sample());
        let params = single_pc(&q(&[("access_token", "jwt"), ("join_request", &raw)]), None)
            .expect("decodes");
        assert_eq!(params.request, sample());
        assert_eq!(params.mode, Mode::SinglePeerConnection);
        assert!(params.auto_subscribe());
        let unpadded = raw.trim_end_matches('=');
        assert_eq!(decode_join_request(unpadded).expect("unpadded"), sample());
    }

    #[test]
    fn an_uncompressed_join_request_decodes() {
        let wrapped = proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::None as i32,
            join_request: sample().encode_to_vec(),
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(wrapped.encode_to_vec());
        assert_eq!(decode_join_request(&raw).expect("decodes"), sample());
    }

    #[test]
    fn the_token_comes_from_the_query_or_the_header() {
        assert_eq!(
            token(&q(&[("access_token", "a")]), Some("Bearer b")),
            Ok("a".into())
        );
        assert_eq!(token(&q(&[]), Some("Bearer b")), Ok("b".into()));
        assert_eq!(token(&q(&[]), None), Err(JoinError::MissingToken));
        assert_eq!(
            token(&q(&[("access_token", "")]), Some("Basic x")),
            Err(JoinError::MissingToken)
        );
    }

    #[test]
    fn bad_join_requests_say_what_is_wrong() {
        let e = |raw: &str| decode_join_request(raw).expect_err("refused");
        assert!(matches!(e("not base64 !"), JoinError::Base64(_)));
        // Valid base64 of bytes that are no protobuf (a truncated varint).
        let garbage = base64::engine::general_purpose::URL_SAFE.encode([0x0a, 0xff]);
        assert!(matches!(e(&garbage), JoinError::Wrapper(_)));
        // A wrapper that claims gzip around bytes that are not gzip.
        let fake_gzip = proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::Gzip as i32,
            join_request: b"plain".to_vec(),
        };
        let raw = base64::engine::general_purpose::URL_SAFE.encode(fake_gzip.encode_to_vec());
        assert!(matches!(e(&raw), JoinError::Gzip(_)));
        assert_eq!(
            e(&"A".repeat(MAX_JOIN_REQUEST_CHARS + 1)),
            JoinError::JoinRequestTooLong
        );
        assert!(matches!(
            single_pc(&q(&[("access_token", "t")]), None),
            Err(JoinError::MissingJoinRequest)
        ));
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_it_all() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 8 * MAX_JOIN_REQUEST_BYTES])
            .expect("gzip");
        let wrapped = proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::Gzip as i32,
            join_request: gz.finish().expect("gzip"),
        };
        let raw = base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec());
        assert!(raw.len() < MAX_JOIN_REQUEST_CHARS, "{}", raw.len());
        assert_eq!(decode_join_request(&raw), Err(JoinError::TooLarge));
    }

    #[test]
    fn the_dual_mode_query_becomes_a_join_request() {
        let params = dual_pc(
            &q(&[
                ("access_token", "t"),
                ("protocol", "17"),
                ("sdk", "go"),
                ("auto_subscribe", "0"),
                ("reconnect", "1"),
                ("sid", "PA_abc"),
                ("reconnect_reason", "1"),
            ]),
            None,
        )
        .expect("parses");
        assert_eq!(params.mode, Mode::DualPeerConnection);
        assert!(params.is_reconnect());
        assert!(!params.auto_subscribe());
        assert_eq!(params.request.participant_sid, "PA_abc");
        let info = params.request.client_info.expect("client info");
        assert_eq!(info.protocol, 17);
        assert_eq!(info.sdk, proto::client_info::Sdk::Go as i32);
        let bad = dual_pc(&q(&[("access_token", "t"), ("reconnect", "maybe")]), None);
        assert!(matches!(
            bad,
            Err(JoinError::BadParameter {
                name: "reconnect",
                ..
            })
        ));
        assert!(is_livekit_query(&q(&[("protocol", "17")])));
        assert!(!is_livekit_query(&q(&[("access_token", "t")])));
    }
}
