//! Signal frames: each WebSocket message is one binary protobuf,
//! `SignalRequest` from the client, `SignalResponse` from the server.

use prost::Message;

use super::proto;

/// Largest client frame accepted (bytes): offers set the size (a session of
/// 256 media lines, 1-3 KB of SDP each).
pub const MAX_FRAME_BYTES: usize = 512 * 1024;

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("LiveKit signalling frames are binary protobuf (SignalRequest), not text")]
    Text,
    #[error("signal frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("signal frame is not a SignalRequest protobuf: {0}")]
    Decode(String),
    #[error("signal frame carries no request (unknown or empty message)")]
    Empty,
}

/// Decode one binary client frame.
pub fn decode_request(frame: &[u8]) -> Result<proto::signal_request::Message, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(frame.len()));
    }
    proto::SignalRequest::decode(frame)
        .map_err(|e| FrameError::Decode(e.to_string()))?
        .message
        .ok_or(FrameError::Empty)
}

/// Encode one server frame.
pub fn encode_response(message: proto::signal_response::Message) -> Vec<u8> {
    proto::SignalResponse {
        message: Some(message),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_request_round_trips_and_garbage_is_refused() {
        let ping = proto::SignalRequest {
            message: Some(proto::signal_request::Message::PingReq(proto::Ping {
                timestamp: 42,
                rtt: 7,
            })),
        };
        assert_eq!(
            decode_request(&ping.encode_to_vec()),
            Ok(proto::signal_request::Message::PingReq(proto::Ping {
                timestamp: 42,
                rtt: 7
            }))
        );
        assert_eq!(decode_request(&[]), Err(FrameError::Empty));
        assert!(matches!(
            decode_request(&[0x0a, 0xff]),
            Err(FrameError::Decode(_))
        ));
        assert_eq!(
            decode_request(&vec![0u8; MAX_FRAME_BYTES + 1]),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
    }

    #[test]
    fn a_join_response_encodes_as_the_sdks_decode_it() {
        let bytes = encode_response(proto::signal_response::Message::Pong(5));
        let back = proto::SignalResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back.message, Some(proto::signal_response::Message::Pong(5)));
    }
}
