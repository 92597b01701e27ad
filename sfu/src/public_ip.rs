//! Discovery of the server's public IP address at start-up: a STUN Binding
//! request (RFC 8489) to a configured STUN server, whose XOR-MAPPED-ADDRESS
//! is the address clients reach. This is what a cloud VM behind a 1:1 NAT
//! advertises in its ICE candidates when the operator does not set
//! `public_ip` by hand.
//!
//! [`BindingProbe`] is the sans-IO codec (build the request, recognise and
//! read the response); [`discover`] is the thin tokio shell around it, with
//! a bounded number of attempts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::worker::demux::{stun_attribute, STUN_MAGIC_COOKIE as MAGIC_COOKIE};

/// Binding request message type.
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
/// How many Binding requests [`discover`] sends before giving up.
pub const ATTEMPTS: u32 = 4;
/// How long [`discover`] waits for the answer to each request.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(750);

/// Why the public address could not be discovered.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot resolve STUN server {server}: {reason}")]
    Resolve { server: String, reason: String },
    #[error("cannot open a UDP socket on {bind}: {source}")]
    Socket {
        bind: SocketAddr,
        source: std::io::Error,
    },
    #[error("STUN server {server} did not answer {attempts} Binding requests")]
    NoAnswer { server: SocketAddr, attempts: u32 },
    #[error("STUN server {server} answered with an error: {reason}")]
    Refused { server: SocketAddr, reason: String },
}

/// What one received datagram means to a probe.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Not a STUN response to this probe's transaction (ignore it).
    Unrelated,
    /// A success response carrying the address the server saw.
    Mapped(SocketAddr),
    /// An error response, or a success without a mapped address.
    Failed(String),
}

/// One Binding transaction: its request and the recognition of its answer.
#[derive(Debug, Clone)]
pub struct BindingProbe {
    transaction: [u8; 12],
}

impl BindingProbe {
    pub fn new(transaction: [u8; 12]) -> BindingProbe {
        BindingProbe { transaction }
    }

    /// The 20-byte Binding request (no attributes: a public STUN server
    /// needs none).
    pub fn request(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[0..2].copy_from_slice(&BINDING_REQUEST);
        // Bytes 2..4: attribute length 0.
        out[4..8].copy_from_slice(&MAGIC_COOKIE);
        out[8..20].copy_from_slice(&self.transaction);
        out
    }

    /// Read a datagram received on the probe's socket.
    pub fn answer(&self, datagram: &[u8]) -> ProbeAnswer {
        let Some((message_type, message)) = self.own_message(datagram) else {
            return ProbeAnswer::Unrelated;
        };
        match message_type {
            BINDING_SUCCESS => {
                let mapped = stun_attribute(message, XOR_MAPPED_ADDRESS)
                    .and_then(|v| read_address(v, Some(&self.transaction)))
                    .or_else(|| {
                        stun_attribute(message, MAPPED_ADDRESS).and_then(|v| read_address(v, None))
                    });
                match mapped {
                    Some(addr) => ProbeAnswer::Mapped(addr),
                    None => ProbeAnswer::Failed("success response without a mapped address".into()),
                }
            }
            BINDING_ERROR => ProbeAnswer::Failed(
                stun_attribute(message, ERROR_CODE)
                    .and_then(read_error_code)
                    .unwrap_or_else(|| "error response without ERROR-CODE".into()),
            ),
            _ => ProbeAnswer::Unrelated,
        }
    }

    /// The message type and the whole message (header and every attribute
    /// its length announces) of a well-framed STUN message of this
    /// transaction.
    fn own_message<'a>(&self, datagram: &'a [u8]) -> Option<(u16, &'a [u8])> {
        let header = datagram.get(..20)?;
        if header[4..8] != MAGIC_COOKIE || header[8..20] != self.transaction {
            return None;
        }
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let message = datagram.get(..20 + length)?;
        Some((u16::from_be_bytes([header[0], header[1]]), message))
    }
}

const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const MAPPED_ADDRESS: u16 = 0x0001;
const ERROR_CODE: u16 = 0x0009;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// A (XOR-)MAPPED-ADDRESS value; `xor` carries the transaction id when the
/// address is XOR-ed with the magic cookie (and, for IPv6, the id).
fn read_address(value: &[u8], xor: Option<&[u8; 12]>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    let mut mask = [0u8; 16];
    if let Some(transaction) = xor {
        port ^= 0x2112;
        mask[..4].copy_from_slice(&MAGIC_COOKIE);
        mask[4..].copy_from_slice(transaction);
    }
    let len = match family {
        0x01 => 4,
        0x02 => 16,
        _ => return None,
    };
    let raw = value.get(4..4 + len)?;
    let mut octets = [0u8; 16];
    for (i, o) in octets[..len].iter_mut().enumerate() {
        *o = raw[i] ^ mask[i];
    }
    let ip = if len == 4 {
        IpAddr::from([octets[0], octets[1], octets[2], octets[3]])
    } else {
        IpAddr::from(octets)
    };
    Some(SocketAddr::new(ip, port))
}

/// "420 Unknown Attribute" from an ERROR-CODE value.
fn read_error_code(value: &[u8]) -> Option<String> {
    let class = u16::from(*value.get(2)? & 0x07);
    let number = u16::from(*value.get(3)?);
    let reason = String::from_utf8_lossy(value.get(4..)?);
    Some(format!(
        "{} {}",
        class * 100 + number,
        reason.trim_end_matches('\0')
    ))
}

/// Ask `server` (`host:port`) which address this machine's traffic from
/// `bind_ip` arrives from, and return its IP. Sends up to [`ATTEMPTS`]
/// requests, each with its own transaction, [`ATTEMPT_TIMEOUT`] apart.
pub async fn discover(server: &str, bind_ip: IpAddr) -> Result<IpAddr, DiscoveryError> {
    let resolve_error = |reason: String| DiscoveryError::Resolve {
        server: server.to_string(),
        reason,
    };
    let target = tokio::net::lookup_host(server)
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .find(|a| a.is_ipv4() == bind_ip.is_ipv4())
        .ok_or_else(|| resolve_error("no address of the media address family".into()))?;
    let bind = SocketAddr::new(bind_ip, 0);
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|source| DiscoveryError::Socket { bind, source })?;
    let mut buf = [0u8; 1500];
    for attempt in 1..=ATTEMPTS {
        let probe = BindingProbe::new(rand::random());
        if let Err(e) = socket.send_to(&probe.request(), target).await {
            tracing::warn!(%target, attempt, error = %e, "STUN Binding request not sent");
        }
        let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
        // Bounded: each read either ends the loop or is followed by another
        // read until the attempt's deadline passes.
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let Ok((len, from)) = received else { break };
            if from != target {
                continue;
            }
            match probe.answer(&buf[..len]) {
                ProbeAnswer::Unrelated => continue,
                ProbeAnswer::Mapped(addr) => return Ok(addr.ip()),
                ProbeAnswer::Failed(reason) => {
                    return Err(DiscoveryError::Refused {
                        server: target,
                        reason,
                    })
                }
            }
        }
    }
    Err(DiscoveryError::NoAnswer {
        server: target,
        attempts: ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSACTION: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    /// A Binding success response as RFC 8489 servers (coturn) send it:
    /// XOR-MAPPED-ADDRESS plus attributes the probe does not need.
    fn success_response(transaction: [u8; 12], mapped: std::net::SocketAddrV4) -> Vec<u8> {
        let mut attrs = Vec::new();
        // SOFTWARE "test" (comprehension-optional).
        attrs.extend_from_slice(&[0x80, 0x22, 0x00, 0x04]);
        attrs.extend_from_slice(b"test");
        // XOR-MAPPED-ADDRESS.
        attrs.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
        let port = mapped.port() ^ 0x2112;
        attrs.extend_from_slice(&port.to_be_bytes());
        for (b, c) in mapped.ip().octets().iter().zip(MAGIC_COOKIE) {
            attrs.push(b ^ c);
        }
        let mut out = vec![0x01, 0x01];
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE);
        out.extend_from_slice(&transaction);
        out.extend_from_slice(&attrs);
        out
    }

    #[test]
    fn request_is_a_bare_binding_request() {
        let request = BindingProbe::new(TRANSACTION).request();
        assert_eq!(&request[0..4], &[0x00, 0x01, 0x00, 0x00]);
        assert_eq!(&request[4..8], &MAGIC_COOKIE);
        assert_eq!(&request[8..], &TRANSACTION);
    }

    #[test]
    fn reads_the_mapped_address_of_its_own_transaction() {
        let mapped = "203.0.113.7:40123"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let probe = BindingProbe::new(TRANSACTION);
        assert_eq!(
            probe.answer(&success_response(TRANSACTION, mapped)),
            ProbeAnswer::Mapped(SocketAddr::V4(mapped))
        );
        let mut other = TRANSACTION;
        other[0] = 99;
        assert_eq!(
            probe.answer(&success_response(other, mapped)),
            ProbeAnswer::Unrelated
        );
    }

    #[test]
    fn reads_an_ipv6_mapped_address_xored_with_cookie_and_transaction() {
        let ip: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap_or_else(|_| unreachable!());
        let mut mask = [0u8; 16];
        mask[..4].copy_from_slice(&MAGIC_COOKIE);
        mask[4..].copy_from_slice(&TRANSACTION);
        let mut attrs = vec![0x00, 0x20, 0x00, 0x14, 0x00, 0x02];
        attrs.extend_from_slice(&(40123u16 ^ 0x2112).to_be_bytes());
        attrs.extend(ip.octets().iter().zip(mask).map(|(b, m)| b ^ m));
        let mut msg = vec![0x01, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&TRANSACTION);
        msg.extend_from_slice(&attrs);
        assert_eq!(
            BindingProbe::new(TRANSACTION).answer(&msg),
            ProbeAnswer::Mapped(SocketAddr::new(IpAddr::V6(ip), 40123))
        );
    }

    #[test]
    fn garbage_and_truncation_are_unrelated() {
        let probe = BindingProbe::new(TRANSACTION);
        let mapped = "198.51.100.1:9".parse().unwrap_or_else(|_| unreachable!());
        let full = success_response(TRANSACTION, mapped);
        for len in 0..full.len() {
            assert_ne!(
                probe.answer(&full[..len]),
                ProbeAnswer::Mapped(SocketAddr::V4(mapped)),
                "truncated to {len}"
            );
        }
        assert_eq!(probe.answer(b"\x16\xfe\xfd hello"), ProbeAnswer::Unrelated);
    }

    #[test]
    fn error_response_names_the_error() {
        // Binding error response with ERROR-CODE 420 "Unknown".
        let mut attrs = vec![0x00, 0x09, 0x00, 0x0b, 0x00, 0x00, 0x04, 20];
        attrs.extend_from_slice(b"Unknown");
        attrs.push(0); // padding to 4 bytes
        let mut msg = vec![0x01, 0x11];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&TRANSACTION);
        msg.extend_from_slice(&attrs);
        match BindingProbe::new(TRANSACTION).answer(&msg) {
            ProbeAnswer::Failed(reason) => assert!(reason.contains("420"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn discovers_through_a_loopback_stun_responder() -> Result<(), Box<dyn std::error::Error>>
    {
        let responder = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let server = responder.local_addr()?;
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            // Drop the first request: discovery must retry.
            let _ = responder.recv_from(&mut buf).await;
            let (len, from) = responder.recv_from(&mut buf).await?;
            let mut transaction = [0u8; 12];
            transaction.copy_from_slice(&buf[8..20]);
            let _ = len;
            let SocketAddr::V4(from4) = from else {
                return Ok::<_, std::io::Error>(());
            };
            responder
                .send_to(&success_response(transaction, from4), from)
                .await?;
            Ok(())
        });
        let ip = discover(&server.to_string(), "127.0.0.1".parse()?).await?;
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>()?);
        serve.await??;
        Ok(())
    }

    #[tokio::test]
    async fn silent_server_is_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let server = silent.local_addr()?;
        let err = discover(&server.to_string(), "127.0.0.1".parse()?)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("did not answer 4 Binding requests"), "{err}");
        Ok(())
    }
}
