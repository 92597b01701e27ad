//! Data-channel messages in the two dialects members speak, sans-IO.
//!
//! - The room protocol's: channels `reliable` / `lossy`, JSON envelopes
//!   (`{"topic","payload","to"}` in, `{"from","topic","payload"}` out).
//! - LiveKit's: channels `_reliable` / `_lossy` that the client opens, one
//!   `DataPacket` protobuf per message. The server stamps the sender's
//!   identity and sid (receivers find the participant by identity and
//!   de-duplicate reliable packets per sid and `sequence`, which is kept),
//!   routes by `destination_identities`, and passes every kind of packet
//!   on (user data, chat, RPC, streams) except client metrics.
//!
//! A message keeps its LiveKit packet (stamped) while it crosses the room
//! and other nodes' bridges, so LiveKit receivers get it unchanged; JSON
//! receivers get its user payload, and LiveKit receivers of a JSON or
//! admin API message get it as a user packet.

use prost::Message;
use signaling::livekit::proto;
use signaling::room_protocol::{DataEnvelope, RelayedData};

/// Which channel a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Reliable,
    Lossy,
}

impl Delivery {
    /// From a channel label of either dialect (a bridge's label too).
    pub fn of_label(label: &str) -> Delivery {
        if label.ends_with("lossy") {
            Delivery::Lossy
        } else {
            Delivery::Reliable
        }
    }

    /// The channel label a member of `dialect` receives it on.
    pub fn label(self, dialect: Dialect) -> &'static str {
        match (dialect, self) {
            (Dialect::Json, Delivery::Reliable) => "reliable",
            (Dialect::Json, Delivery::Lossy) => "lossy",
            (Dialect::LiveKit, Delivery::Reliable) => "_reliable",
            (Dialect::LiveKit, Delivery::Lossy) => "_lossy",
        }
    }
}

/// How a member frames its data messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Json,
    LiveKit,
}

impl Dialect {
    /// The dialect of the channel a message arrived on.
    pub fn of_label(label: &str) -> Dialect {
        if label.starts_with('_') {
            Dialect::LiveKit
        } else {
            Dialect::Json
        }
    }
}

/// Who sent a message.
pub struct Sender<'a> {
    pub sid: &'a str,
    pub identity: &'a str,
}

/// A message decoded from a member's channel, ready to relay.
#[derive(Debug, PartialEq)]
pub struct Incoming {
    pub message: RelayedData,
    /// The identities it is for (`None`: everyone).
    pub to: Option<Vec<String>>,
}

/// Why a message was not relayed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// It does not parse; the text says why.
    Malformed(String),
    /// It parses but is not passed on (client metrics).
    NotRelayed,
}

/// Decode a message that arrived on channel `label`.
pub fn decode(label: &str, data: &[u8], sender: &Sender) -> Result<Incoming, Refused> {
    match Dialect::of_label(label) {
        Dialect::Json => {
            let envelope = serde_json::from_slice::<DataEnvelope>(data).map_err(|e| {
                Refused::Malformed(format!(
                    "data message is not {{\"topic\",\"payload\",\"to\"}} JSON: {e}"
                ))
            })?;
            Ok(Incoming {
                message: RelayedData {
                    from: Some(sender.identity.to_string()),
                    topic: envelope.topic,
                    payload: envelope.payload,
                    packet: None,
                },
                to: envelope.to,
            })
        }
        Dialect::LiveKit => decode_packet(data, sender),
    }
}

fn decode_packet(data: &[u8], sender: &Sender) -> Result<Incoming, Refused> {
    let mut packet = proto::DataPacket::decode(data)
        .map_err(|e| Refused::Malformed(format!("not a LiveKit DataPacket: {e}")))?;
    packet.participant_identity = sender.identity.to_string();
    packet.participant_sid = sender.sid.to_string();
    let (topic, payload) = match packet.value.as_mut() {
        None => return Err(Refused::Malformed("DataPacket without a value".into())),
        Some(proto::data_packet::Value::Metrics(_)) => return Err(Refused::NotRelayed),
        Some(proto::data_packet::Value::User(user)) => {
            #[allow(deprecated)]
            {
                user.participant_identity = sender.identity.to_string();
                user.participant_sid = sender.sid.to_string();
                if packet.destination_identities.is_empty() {
                    packet.destination_identities =
                        std::mem::take(&mut user.destination_identities);
                }
            }
            let payload = match std::str::from_utf8(&user.payload) {
                Ok(text) => serde_json::Value::String(text.to_string()),
                Err(_) => serde_json::Value::Null,
            };
            (user.topic.clone(), payload)
        }
        Some(_) => (None, serde_json::Value::Null),
    };
    let to =
        (!packet.destination_identities.is_empty()).then(|| packet.destination_identities.clone());
    Ok(Incoming {
        message: RelayedData {
            from: Some(sender.identity.to_string()),
            topic,
            payload,
            packet: Some(packet.encode_to_vec()),
        },
        to,
    })
}

/// The bytes a member of `dialect` receives for `message`.
pub fn encode(message: &RelayedData, dialect: Dialect, delivery: Delivery) -> Vec<u8> {
    match dialect {
        Dialect::Json => {
            let plain = RelayedData {
                packet: None,
                ..message.clone()
            };
            serde_json::to_vec(&plain).unwrap_or_default()
        }
        Dialect::LiveKit => {
            if let Some(packet) = &message.packet {
                return packet.clone();
            }
            let payload = match &message.payload {
                serde_json::Value::String(text) => text.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            let kind = match delivery {
                Delivery::Reliable => proto::data_packet::Kind::Reliable,
                Delivery::Lossy => proto::data_packet::Kind::Lossy,
            };
            #[allow(deprecated)]
            let packet = proto::DataPacket {
                kind: kind as i32,
                participant_identity: message.from.clone().unwrap_or_default(),
                value: Some(proto::data_packet::Value::User(proto::UserPacket {
                    payload,
                    topic: message.topic.clone(),
                    participant_identity: message.from.clone().unwrap_or_default(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            packet.encode_to_vec()
        }
    }
}

#[cfg(test)]
// The tests read and write `kind`, deprecated but still sent by the SDKs.
#[allow(deprecated)]
mod tests {
    use super::*;

    const ANN: Sender = Sender {
        sid: "PA_ann",
        identity: "ann",
    };

    fn user_packet(payload: &[u8], to: &[&str]) -> Vec<u8> {
        proto::DataPacket {
            kind: proto::data_packet::Kind::Reliable as i32,
            participant_identity: "someone-else".into(),
            destination_identities: to.iter().map(|s| s.to_string()).collect(),
            sequence: 7,
            value: Some(proto::data_packet::Value::User(proto::UserPacket {
                payload: payload.to_vec(),
                topic: Some("chat".into()),
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_livekit_packet_is_stamped_with_its_sender_and_keeps_its_sequence() {
        let got = decode("_reliable", &user_packet(b"hi", &["ben"]), &ANN).expect("decodes");
        assert_eq!(got.to, Some(vec!["ben".to_string()]));
        assert_eq!(got.message.payload, serde_json::json!("hi"));
        assert_eq!(got.message.topic.as_deref(), Some("chat"));
        let out = encode(&got.message, Dialect::LiveKit, Delivery::Reliable);
        let packet = proto::DataPacket::decode(out.as_slice()).expect("a packet");
        assert_eq!(
            packet.participant_identity, "ann",
            "not what the sender claimed"
        );
        assert_eq!(packet.participant_sid, "PA_ann");
        assert_eq!(packet.sequence, 7);
        // A JSON member gets the payload with the sender.
        let json: serde_json::Value =
            serde_json::from_slice(&encode(&got.message, Dialect::Json, Delivery::Reliable))
                .expect("json");
        assert_eq!(json["from"], "ann");
        assert_eq!(json["payload"], "hi");
        assert!(json.get("packet").is_none());
    }

    #[test]
    fn json_and_admin_messages_reach_livekit_members_as_user_packets() {
        let msg = RelayedData {
            from: None,
            topic: Some("news".into()),
            payload: serde_json::json!({"a": 1}),
            packet: None,
        };
        let out = encode(&msg, Dialect::LiveKit, Delivery::Lossy);
        let packet = proto::DataPacket::decode(out.as_slice()).expect("a packet");
        assert_eq!(packet.kind, proto::data_packet::Kind::Lossy as i32);
        let Some(proto::data_packet::Value::User(user)) = packet.value else {
            panic!("not a user packet");
        };
        assert_eq!(user.payload, br#"{"a":1}"#);
        assert_eq!(user.topic.as_deref(), Some("news"));
    }

    #[test]
    fn garbage_and_metrics_are_not_relayed() {
        assert!(matches!(
            decode("_reliable", &[0xff, 0xff, 0xff], &ANN),
            Err(Refused::Malformed(_))
        ));
        let metrics = proto::DataPacket {
            value: Some(proto::data_packet::Value::Metrics(Default::default())),
            ..Default::default()
        };
        assert_eq!(
            decode("_lossy", &metrics.encode_to_vec(), &ANN),
            Err(Refused::NotRelayed)
        );
        assert!(matches!(
            decode("reliable", b"{", &ANN),
            Err(Refused::Malformed(_))
        ));
    }
}
