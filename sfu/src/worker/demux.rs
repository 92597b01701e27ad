//! Datagram demultiplexing: which participant a datagram (a UDP datagram or
//! an ICE-TCP frame) belongs to. A remote is a protocol and an address: the
//! same address over UDP and over TCP are two different remotes.
//!
//! All participants of a worker share one UDP socket (and one TCP port). Once a peer's ICE has
//! settled, its datagrams are found by source address in O(1). Before that,
//! STUN binding requests carry `USERNAME = <our ufrag>:<their ufrag>`, and
//! our ufrag is unique per participant. Non-STUN datagrams from a new address
//! (DTLS right after ICE nominated a pair) are offered to the participants
//! that are still connecting, whose `Rtc` decides; the answer is remembered.
//! No linear scan over all participants happens on the packet path.
//!
//! A STUN request teaches a new address only when its MESSAGE-INTEGRITY
//! verifies with the participant's ICE password (whoever knows only the
//! ufrag, which travels in SDP, cannot move or flood a session), and each
//! participant keeps at most [`MAX_ADDRS_PER_PARTICIPANT`] addresses (the
//! oldest is forgotten first).

use std::collections::HashMap;
use std::net::SocketAddr;

use str0m::net::Protocol;

use crate::forward::ParticipantId;

/// STUN's fixed magic cookie (RFC 8489 section 5).
pub const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_ATTR_USERNAME: u16 = 0x0006;
const STUN_HEADER_LEN: usize = 20;
/// Remote addresses remembered per participant: enough for every candidate
/// pair a client checks (host, reflexive, relayed, TCP, both IP families).
pub const MAX_ADDRS_PER_PARTICIPANT: usize = 16;

/// True when `data` looks like a STUN message (RFC 5389 section 6, RFC 7983).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= STUN_HEADER_LEN && data[0] < 2 && data[4..8] == STUN_MAGIC_COOKIE
}

/// The USERNAME attribute of a STUN message, if present and well formed.
pub fn stun_username(data: &[u8]) -> Option<&str> {
    stun_attribute(data, STUN_ATTR_USERNAME).and_then(|v| std::str::from_utf8(v).ok())
}

/// The value of the first attribute of type `wanted` in a STUN message
/// (attributes are type, length, value padded to four bytes), if present
/// and well formed.
pub fn stun_attribute(data: &[u8], wanted: u16) -> Option<&[u8]> {
    if !is_stun(data) {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let end = STUN_HEADER_LEN.checked_add(body_len)?.min(data.len());
    let mut at = STUN_HEADER_LEN;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        let value = data.get(at + 4..at + 4 + len)?;
        if kind == wanted {
            return Some(value);
        }
        // Attributes are padded to a multiple of four bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The receiver's (our) ufrag in a binding request's USERNAME.
pub fn local_ufrag(data: &[u8]) -> Option<&str> {
    stun_username(data).and_then(|u| u.split(':').next())
}

/// True when `data` is an ICE Binding request (or indication) whose
/// MESSAGE-INTEGRITY verifies with `password`, the receiver's ICE password.
pub fn stun_integrity_ok(data: &[u8], password: &str) -> bool {
    let hmac = str0m_aws_lc_rs::default_provider().sha1_hmac_provider;
    str0m::ice::StunMessage::parse(data).is_ok_and(|m| {
        m.verify(password.as_bytes(), |key, payloads| {
            hmac.sha1_hmac(key, payloads)
        })
    })
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Known participant.
    Participant(ParticipantId),
    /// Unknown address, not STUN: ask the connecting participants.
    AskConnecting,
    /// Nobody: drop.
    Drop,
}

/// The demultiplexing index of one worker.
#[derive(Debug, Default)]
pub struct Demux {
    /// Our ufrag -> (participant, our ICE password).
    by_ufrag: HashMap<String, (ParticipantId, String)>,
    by_addr: HashMap<(Protocol, SocketAddr), ParticipantId>,
    addrs_of: HashMap<ParticipantId, Vec<(Protocol, SocketAddr)>>,
}

impl Demux {
    /// Whose datagram this is. An authentic STUN request naming a
    /// participant's ufrag from an address not seen before teaches that
    /// address: the client may move its media to another candidate pair (a
    /// path switch, a network change) without an ICE restart, and its
    /// media must follow.
    pub fn route(&mut self, proto: Protocol, source: SocketAddr, data: &[u8]) -> Route {
        if is_stun(data) {
            // STUN from a known address can be a consent check after an ICE
            // restart, so the ufrag wins when present.
            if let Some((id, password)) = local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                let id = *id;
                if !self.by_addr.contains_key(&(proto, source)) {
                    if !stun_integrity_ok(data, password) {
                        return Route::Drop;
                    }
                    self.learn_addr(proto, source, id);
                }
                return Route::Participant(id);
            }
        }
        match self.by_addr.get(&(proto, source)) {
            Some(id) => Route::Participant(*id),
            None if is_stun(data) => Route::Drop,
            None => Route::AskConnecting,
        }
    }

    /// Route STUN for our ICE credentials `ufrag`/`password` to `id`.
    pub fn insert_credentials(&mut self, ufrag: &str, password: &str, id: ParticipantId) {
        self.by_ufrag
            .insert(ufrag.to_string(), (id, password.to_string()));
    }

    pub fn remove_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    /// Remember that `source` belongs to `id` (its `Rtc` accepted traffic from it).
    pub fn learn_addr(&mut self, proto: Protocol, source: SocketAddr, id: ParticipantId) {
        let source = (proto, source);
        if let Some(previous) = self.by_addr.insert(source, id) {
            if previous != id {
                if let Some(list) = self.addrs_of.get_mut(&previous) {
                    list.retain(|a| *a != source);
                }
            }
        }
        let list = self.addrs_of.entry(id).or_default();
        if !list.contains(&source) {
            list.push(source);
        }
        if list.len() > MAX_ADDRS_PER_PARTICIPANT {
            let oldest = list.remove(0);
            if self.by_addr.get(&oldest) == Some(&id) {
                self.by_addr.remove(&oldest);
            }
        }
    }

    pub fn remove_participant(&mut self, id: ParticipantId) {
        self.by_ufrag.retain(|_, (v, _)| *v != id);
        for addr in self.addrs_of.remove(&id).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&id) {
                self.by_addr.remove(&addr);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_ufrag.len() + self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "server-ice-password-0123";

    /// An ICE connectivity check as a browser sends it, signed with
    /// `password` (ours).
    fn signed_check(username: &str, password: &str) -> Vec<u8> {
        let hmac = str0m_aws_lc_rs::default_provider().sha1_hmac_provider;
        let msg = str0m::ice::StunMessage::binding_request(
            username,
            str0m::ice::TransId::new(),
            true,
            7,
            1234,
            false,
        );
        let mut buf = vec![0u8; 1500];
        let len = msg
            .to_bytes(Some(password.as_bytes()), &mut buf, |k, p| {
                hmac.sha1_hmac(k, p)
            })
            .unwrap_or(0);
        buf.truncate(len);
        buf
    }

    /// A well-formed request without integrity: only its USERNAME matters.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = vec![];
        // A leading attribute of odd length exercises padding.
        attrs.extend_from_slice(&0x8022u16.to_be_bytes()); // SOFTWARE
        attrs.extend_from_slice(&3u16.to_be_bytes());
        attrs.extend_from_slice(b"abc\0");
        attrs.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const UDP: Protocol = Protocol::Udp;

    #[test]
    fn parses_username() {
        let m = binding_request("srvfrag:clientfrag");
        assert!(is_stun(&m));
        assert_eq!(stun_username(&m), Some("srvfrag:clientfrag"));
        assert_eq!(local_ufrag(&m), Some("srvfrag"));
    }

    #[test]
    fn malformed_stun_does_not_panic() {
        let m = binding_request("u:v");
        for cut in 0..m.len() {
            let _ = stun_username(&m[..cut]);
        }
        let mut lying = m.clone();
        lying[2] = 0xff; // body length beyond the datagram
        let _ = stun_username(&lying);
        let mut bad_attr = m;
        let last = bad_attr.len() - 1;
        bad_attr[last - 10] = 0xff;
        let _ = stun_username(&bad_attr);
        assert_eq!(stun_username(&[0x80; 40]), None, "RTP is not STUN");
    }

    #[test]
    fn routes_by_ufrag_then_address() {
        let mut d = Demux::default();
        d.insert_credentials("aaaa", PASSWORD, 1);
        d.insert_credentials("bbbb", PASSWORD, 2);
        assert_eq!(
            d.route(UDP, addr(5000), &signed_check("bbbb:x", PASSWORD)),
            Route::Participant(2)
        );
        assert_eq!(
            d.route(UDP, addr(5001), &binding_request("zzzz:x")),
            Route::Drop
        );
        // DTLS from an address no STUN came from: the connecting participants decide.
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        assert_eq!(d.route(UDP, addr(5002), &dtls), Route::AskConnecting);
        d.learn_addr(UDP, addr(5002), 2);
        assert_eq!(d.route(UDP, addr(5002), &dtls), Route::Participant(2));
        // The same address over TCP is another remote.
        assert_eq!(
            d.route(Protocol::Tcp, addr(5002), &dtls),
            Route::AskConnecting
        );
        d.learn_addr(Protocol::Tcp, addr(5002), 1);
        assert_eq!(
            d.route(Protocol::Tcp, addr(5002), &dtls),
            Route::Participant(1)
        );
        assert_eq!(d.route(UDP, addr(5002), &dtls), Route::Participant(2));
        d.remove_participant(2);
        assert_eq!(d.route(UDP, addr(5002), &dtls), Route::AskConnecting);
        assert_eq!(
            d.route(UDP, addr(5000), &dtls),
            Route::AskConnecting,
            "forgotten with it"
        );
        assert_eq!(
            d.route(UDP, addr(5000), &binding_request("bbbb:x")),
            Route::Drop
        );
        d.remove_participant(1);
        assert!(d.is_empty());
    }

    #[test]
    fn a_client_moving_to_another_address_is_followed_by_its_stun() {
        let mut d = Demux::default();
        d.insert_credentials("aaaa", PASSWORD, 1);
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        assert_eq!(
            d.route(UDP, addr(5000), &signed_check("aaaa:x", PASSWORD)),
            Route::Participant(1)
        );
        assert_eq!(
            d.route(UDP, addr(5000), &dtls),
            Route::Participant(1),
            "learned from STUN"
        );
        // The client switches its selected pair to another local address.
        assert_eq!(
            d.route(UDP, addr(6000), &dtls),
            Route::AskConnecting,
            "not yet known"
        );
        assert_eq!(
            d.route(UDP, addr(6000), &signed_check("aaaa:x", PASSWORD)),
            Route::Participant(1)
        );
        assert_eq!(
            d.route(UDP, addr(6000), &dtls),
            Route::Participant(1),
            "media follows"
        );
        // A STUN request with an unknown ufrag teaches nothing.
        assert_eq!(
            d.route(UDP, addr(7000), &binding_request("zzzz:x")),
            Route::Drop
        );
        assert_eq!(d.route(UDP, addr(7000), &dtls), Route::AskConnecting);
    }

    #[test]
    fn stun_without_the_password_teaches_nothing() {
        let mut d = Demux::default();
        d.insert_credentials("aaaa", PASSWORD, 1);
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        for forged in [
            binding_request("aaaa:x"),
            signed_check("aaaa:x", "not-the-password"),
        ] {
            assert_eq!(d.route(UDP, addr(7000), &forged), Route::Drop);
            assert_eq!(d.route(UDP, addr(7000), &dtls), Route::AskConnecting);
        }
        assert!(d.is_empty() || d.len() == 1, "only the ufrag is known");
        // From an address it already owns, the participant's Rtc judges.
        assert_eq!(
            d.route(UDP, addr(7001), &signed_check("aaaa:x", PASSWORD)),
            Route::Participant(1)
        );
        assert_eq!(
            d.route(UDP, addr(7001), &binding_request("aaaa:x")),
            Route::Participant(1)
        );
    }

    #[test]
    fn a_participant_keeps_a_bounded_number_of_addresses() {
        let mut d = Demux::default();
        d.insert_credentials("aaaa", PASSWORD, 1);
        let extra = 5;
        for port in 0..(MAX_ADDRS_PER_PARTICIPANT + extra) as u16 {
            assert_eq!(
                d.route(UDP, addr(8000 + port), &signed_check("aaaa:x", PASSWORD)),
                Route::Participant(1)
            );
        }
        assert_eq!(d.len(), 1 + MAX_ADDRS_PER_PARTICIPANT);
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        // The oldest were forgotten, the newest kept.
        assert_eq!(d.route(UDP, addr(8000), &dtls), Route::AskConnecting);
        let newest = 8000 + (MAX_ADDRS_PER_PARTICIPANT + extra - 1) as u16;
        assert_eq!(d.route(UDP, addr(newest), &dtls), Route::Participant(1));
        d.remove_participant(1);
        assert!(d.is_empty());
    }
}
