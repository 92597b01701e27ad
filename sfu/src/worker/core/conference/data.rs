//! Data messages between members: what arrives on a member's data
//! channels, stamped and routed to the room's members (all, or those
//! named) and to the bridges whose nodes have any of them.

use super::*;

impl WorkerCore {
    /// A data-channel message from `from` on channel `cid`.
    pub(in crate::worker::core) fn relay_data(
        &mut self,
        now: Instant,
        from: ParticipantId,
        cid: ChannelId,
        data: &[u8],
    ) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        let room_name = p.room.clone();
        let identity = p.identity.clone();
        let Some(m) = p.member.as_mut() else {
            return;
        };
        let label = m
            .channels
            .iter()
            .find(|(_, c)| **c == cid)
            .map(|(l, _)| l.clone())
            .unwrap_or_else(|| "reliable".into());
        let refused = if !m.can_publish_data {
            Some((
                ErrorCode::NotAllowed,
                "your token does not grant canPublishData".to_string(),
            ))
        } else if data.len() > MAX_DATA_BYTES {
            Some((
                ErrorCode::TooLarge,
                format!(
                    "data message of {} bytes is larger than {MAX_DATA_BYTES}",
                    data.len()
                ),
            ))
        } else if !m.data_limit.take(now) {
            Some((
                ErrorCode::RateLimited,
                format!(
                    "more than {} data messages per second; message dropped",
                    crate::room::member::DATA_PER_SECOND
                ),
            ))
        } else {
            None
        };
        // Refused with an error for the sender, or (client metrics) silently.
        let incoming: Result<_, Option<(ErrorCode, String)>> = match refused {
            Some(r) => Err(Some(r)),
            None => {
                let sender = data_packets::Sender {
                    sid: &m.sid,
                    identity: &identity,
                };
                data_packets::decode(&label, data, &sender).map_err(|e| match e {
                    data_packets::Refused::Malformed(why) => Some((ErrorCode::BadMessage, why)),
                    data_packets::Refused::NotRelayed => None,
                })
            }
        };
        let incoming = match incoming {
            Ok(i) => i,
            Err(reply) => {
                self.ctx
                    .metrics
                    .data_messages
                    .with_label_values(&["refused"])
                    .inc();
                if let Some((code, message)) = reply {
                    m.send(ServerMessage::error(code, message), now);
                }
                return;
            }
        };
        self.ctx
            .metrics
            .data_messages
            .with_label_values(&["relayed"])
            .inc();
        self.deliver_data(
            &room_name,
            Some(from),
            &label,
            incoming.message,
            incoming.to.as_deref(),
            now,
        );
    }

    /// Write a relayed message to the room's members (all, or `to`), and
    /// pass it to the bridges whose nodes have any of them.
    pub(in crate::worker::core) fn deliver_data(
        &mut self,
        room: &str,
        except: Option<ParticipantId>,
        label: &str,
        msg: RelayedData,
        to: Option<&[String]>,
        now: Instant,
    ) -> usize {
        let delivery = data_packets::Delivery::of_label(label);
        // Encoded once per dialect, when a member of it receives it.
        let mut encoded: [Option<Vec<u8>>; 2] = [None, None];
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        let mut bridges = vec![];
        let mut targets = vec![];
        for rid in &r.participants {
            if Some(*rid) == except {
                continue;
            }
            let Some(p) = self.participants.get(rid) else {
                continue;
            };
            if let Some(m) = p.member.as_ref().filter(|m| m.bridge) {
                if to.is_none_or(|to| m.remote.values().any(|r| to.contains(&r.identity))) {
                    bridges.push(*rid);
                }
                continue;
            }
            if to.is_some_and(|to| !to.contains(&p.identity)) {
                continue;
            }
            let Some(m) = p.member.as_ref() else {
                continue;
            };
            let dialect = if self.downlinks.contains_key(rid) {
                data_packets::Dialect::LiveKit
            } else {
                m.data_dialect()
            };
            let labels = [
                delivery.label(dialect),
                data_packets::Delivery::Reliable.label(dialect),
            ];
            // A member with a downlink hears the room on the server's
            // channels there (its own may never connect).
            let channel = self
                .downlinks
                .get(rid)
                .and_then(|dl| Some((dl.leg, first_channel(&dl.channels, labels)?)))
                .or_else(|| Some((*rid, first_channel(&m.channels, labels)?)));
            if let Some((via, cid)) = channel {
                targets.push((via, cid, dialect));
            }
        }
        for (via, cid, dialect) in targets {
            let Some(p) = self.participants.get_mut(&via) else {
                continue;
            };
            let bytes = encoded[dialect as usize]
                .get_or_insert_with(|| data_packets::encode(&msg, dialect, delivery));
            let binary = dialect == data_packets::Dialect::LiveKit;
            if p.write_channel(cid, bytes, binary) {
                delivered += 1;
                self.dirty.push(via);
            }
        }
        for id in bridges {
            let data = BridgedData {
                label: label.to_string(),
                data: msg.clone(),
                to: to.map(<[String]>::to_vec),
            };
            if let Some(up) = self.uplinks.get_mut(&id) {
                up.tell(ClientMessage::Data(data));
            } else if let Some(m) = self.member_mut(id) {
                m.send(ServerMessage::Data(data), now);
            }
            delivered += 1;
        }
        delivered
    }

    /// A data channel opened on a member's connection.
    pub(in crate::worker::core) fn channel_opened(
        &mut self,
        id: ParticipantId,
        cid: ChannelId,
        label: String,
    ) {
        if let Some(m) = self.member_mut(id) {
            if m.channels.len() < 8 {
                m.channels.insert(label, cid);
            }
        }
    }
}

/// The first of `labels` that `channels` has open.
fn first_channel(channels: &HashMap<String, ChannelId>, labels: [&str; 2]) -> Option<ChannelId> {
    labels.iter().find_map(|l| channels.get(*l)).copied()
}
