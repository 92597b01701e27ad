//! Handshakes in memory: ours against ours with every client key type
//! WebRTC clients use, ours against str0m's default (dimpl) both ways, and
//! what the session does with lost flights, data and garbage.

use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509NameBuilder};
use str0m_proto::crypto::dtls::{DtlsCert, DtlsInstance, DtlsOutput, DtlsProvider, SrtpProfile};
use str0m_proto::crypto::DtlsVersion;

use super::{context, instance, OPENSSL_DTLS};

/// A self-signed certificate on `key`, as a WebRTC client makes one.
fn self_signed(key: PKey<Private>) -> DtlsCert {
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "webrtc-test").expect("CN");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("version");
    let serial = BigNum::from_u32(rand::random::<u32>())
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(30).expect("time"))
        .expect("not after");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    DtlsCert {
        certificate: b.build().to_der().expect("der"),
        private_key: key.private_key_to_pkcs8().expect("pkcs8"),
    }
}

fn ec_cert(curve: Nid) -> DtlsCert {
    let group = EcGroup::from_curve_name(curve).expect("curve");
    let key = EcKey::generate(&group).expect("ec key");
    self_signed(PKey::from_ec_key(key).expect("pkey"))
}

fn rsa_cert() -> DtlsCert {
    let key = Rsa::generate(2048).expect("rsa key");
    self_signed(PKey::from_rsa(key).expect("pkey"))
}

fn ours(cert: &DtlsCert, now: Instant) -> Box<dyn DtlsInstance> {
    OPENSSL_DTLS
        .new_dtls(cert, now, DtlsVersion::Dtls12, Some(1150))
        .expect("instance")
}

fn dimpl_default(cert: &DtlsCert, now: Instant) -> Box<dyn DtlsInstance> {
    str0m_aws_lc_rs::default_provider()
        .dtls_provider
        .new_dtls(cert, now, DtlsVersion::Dtls12, Some(1150))
        .expect("dimpl instance")
}

/// What one side of a handshake reported.
#[derive(Default, Debug)]
struct Side {
    connected: bool,
    peer_cert: Option<Vec<u8>>,
    keying: Option<(Vec<u8>, SrtpProfile)>,
    data: Vec<Vec<u8>>,
    close_notify: bool,
    /// The order of the events (not packets and timeouts).
    order: Vec<&'static str>,
}

/// Polls `from` until its timeout, handing its datagrams to `to` unless
/// `drop` says to lose them. Returns the datagrams sent.
fn pump(
    from: &mut dyn DtlsInstance,
    side: &mut Side,
    to: &mut dyn DtlsInstance,
    drop: &mut dyn FnMut(&[u8]) -> bool,
) -> usize {
    let mut buf = vec![0u8; 2048];
    let mut sent = 0;
    loop {
        match from.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => {
                assert!(p.len() <= 1150, "datagram of {} above the MTU", p.len());
                sent += 1;
                let p = p.to_vec();
                if !drop(&p) {
                    // Errors of the receiver show in its outcome.
                    let _ = to.handle_packet(&p);
                }
            }
            DtlsOutput::Connected => {
                side.connected = true;
                side.order.push("Connected");
            }
            DtlsOutput::PeerCert(der) => {
                side.peer_cert = Some(der.to_vec());
                side.order.push("PeerCert");
            }
            DtlsOutput::KeyingMaterial(km, profile) => {
                side.keying = Some((km.to_vec(), profile));
                side.order.push("KeyingMaterial");
            }
            DtlsOutput::ApplicationData(d) => side.data.push(d.to_vec()),
            DtlsOutput::CloseNotify => side.close_notify = true,
            DtlsOutput::Timeout(_) => return sent,
            other => panic!("unexpected output {other:?}"),
        }
    }
}

/// Runs client and server until both connected (in simulated time: no
/// datagram is lost, so no retransmission timer has to fire).
fn handshake(client: &mut dyn DtlsInstance, server: &mut dyn DtlsInstance) -> (Side, Side) {
    let mut now = Instant::now();
    server.set_active(false);
    client.set_active(true);
    let (mut c, mut s) = (Side::default(), Side::default());
    for _ in 0..20 {
        client.handle_timeout(now).expect("client timeout");
        server.handle_timeout(now).expect("server timeout");
        pump(client, &mut c, server, &mut |_| false);
        pump(server, &mut s, client, &mut |_| false);
        if c.connected && s.connected {
            break;
        }
        now += Duration::from_millis(10);
    }
    assert!(c.connected, "client did not connect: {c:?}");
    assert!(s.connected, "server did not connect: {s:?}");
    (c, s)
}

/// Both sides agree on keys and profile, and each got the other's cert.
fn assert_agreed(c: &Side, s: &Side, client_cert: &DtlsCert, server_cert: &DtlsCert) {
    assert_eq!(c.peer_cert.as_deref(), Some(&server_cert.certificate[..]));
    assert_eq!(s.peer_cert.as_deref(), Some(&client_cert.certificate[..]));
    let (ck, cp) = c.keying.as_ref().expect("client keying material");
    let (sk, sp) = s.keying.as_ref().expect("server keying material");
    assert_eq!(cp, sp);
    assert_eq!(ck.len(), cp.keying_material_len());
    assert_eq!(ck, sk, "keying material differs");
    assert!(ck.iter().any(|b| *b != 0));
}

fn generated() -> DtlsCert {
    OPENSSL_DTLS
        .generate_certificate()
        .expect("generated certificate")
}

#[test]
fn ours_to_ours_ecdsa_p256() {
    let now = Instant::now();
    let (cc, sc) = (generated(), generated());
    let (mut client, mut server) = (ours(&cc, now), ours(&sc, now));
    let (c, s) = handshake(client.as_mut(), server.as_mut());
    assert_agreed(&c, &s, &cc, &sc);
    // Our preference, which both sides offer: AES-256-GCM.
    assert_eq!(
        s.keying.as_ref().map(|k| k.1),
        Some(SrtpProfile::AEAD_AES_256_GCM)
    );
    // dimpl's order: PeerCert, Connected, KeyingMaterial.
    assert_eq!(s.order, ["PeerCert", "Connected", "KeyingMaterial"]);
    assert_eq!(c.order, ["PeerCert", "Connected", "KeyingMaterial"]);
    assert!(client.is_active() && !server.is_active());
    assert!(server.protocol_version().is_some());
}

/// Clients on each key type: GStreamer (RSA-2048), FFmpeg (P-224), P-384.
#[test]
fn server_accepts_rsa_p224_p384_clients() {
    for (what, cc) in [
        ("RSA-2048", rsa_cert()),
        ("P-224", ec_cert(Nid::SECP224R1)),
        ("P-256", ec_cert(Nid::X9_62_PRIME256V1)),
        ("P-384", ec_cert(Nid::SECP384R1)),
    ] {
        let now = Instant::now();
        let sc = generated();
        let (mut client, mut server) = (ours(&cc, now), ours(&sc, now));
        let (c, s) = handshake(client.as_mut(), server.as_mut());
        assert_agreed(&c, &s, &cc, &sc);
        println!("{what} client: {:?}", s.keying.as_ref().map(|k| k.1));
    }
}

/// Ours as the client, against servers on each key type: FFmpeg's muxer
/// answers a=setup:passive, so the server is the DTLS server with P-224.
#[test]
fn client_accepts_rsa_p224_p384_servers() {
    for sc in [rsa_cert(), ec_cert(Nid::SECP224R1), ec_cert(Nid::SECP384R1)] {
        let now = Instant::now();
        let cc = generated();
        let (mut client, mut server) = (ours(&cc, now), ours(&sc, now));
        let (c, s) = handshake(client.as_mut(), server.as_mut());
        assert_agreed(&c, &s, &cc, &sc);
    }
}

/// A client like GStreamer's: RSA-2048 and only the AES-CM profiles.
#[test]
fn gstreamer_like_client_gets_aes_cm() {
    let now = Instant::now();
    let (cc, sc) = (rsa_cert(), generated());
    let mut b = context::builder().expect("builder");
    b.set_tlsext_use_srtp("SRTP_AES128_CM_SHA1_80:SRTP_AES128_CM_SHA1_32")
        .expect("srtp");
    let id = context::identity(&cc).expect("identity");
    let mut client = instance::OpensslDtls::new(b.build(), id, 1150, now);
    let mut server = ours(&sc, now);
    let (c, s) = handshake(&mut client, server.as_mut());
    assert_agreed(&c, &s, &cc, &sc);
    let (km, profile) = s.keying.expect("keying");
    assert_eq!(profile, SrtpProfile::AES128_CM_SHA1_80);
    assert_eq!(km.len(), 60);
}

/// str0m's default DTLS (dimpl) as client, and as server.
#[test]
fn interop_with_dimpl() {
    let now = Instant::now();
    let (cc, sc) = (generated(), generated());
    let mut client = dimpl_default(&cc, now);
    let mut server = ours(&sc, now);
    let (c, s) = handshake(client.as_mut(), server.as_mut());
    assert_agreed(&c, &s, &cc, &sc);
    assert_eq!(
        s.keying.as_ref().map(|k| k.1),
        Some(SrtpProfile::AEAD_AES_256_GCM)
    );

    let mut client = ours(&cc, now);
    let mut server = dimpl_default(&sc, now);
    let (c, s) = handshake(client.as_mut(), server.as_mut());
    assert_agreed(&c, &s, &cc, &sc);

    // Application data (SCTP) both ways, then close_notify.
    let (mut c, mut s) = (Side::default(), Side::default());
    assert_eq!(client.send_application_data(b"to server").ok(), Some(9));
    assert_eq!(server.send_application_data(b"to client").ok(), Some(9));
    pump(client.as_mut(), &mut c, server.as_mut(), &mut |_| false);
    pump(server.as_mut(), &mut s, client.as_mut(), &mut |_| false);
    pump(client.as_mut(), &mut c, server.as_mut(), &mut |_| false);
    assert_eq!(s.data, [b"to server".to_vec()]);
    assert_eq!(c.data, [b"to client".to_vec()]);
    client.close().expect("close");
    assert!(client.is_closing());
    pump(client.as_mut(), &mut c, server.as_mut(), &mut |_| false);
    assert!(client.is_closed());
    pump(server.as_mut(), &mut s, client.as_mut(), &mut |_| false);
    assert!(s.close_notify, "dimpl saw no close_notify");
}

#[test]
fn application_data_waits_for_the_handshake() {
    let now = Instant::now();
    let (cc, sc) = (generated(), generated());
    let (mut client, mut server) = (ours(&cc, now), ours(&sc, now));
    assert_eq!(client.send_application_data(b"early").ok(), Some(0));
    let _ = handshake(client.as_mut(), server.as_mut());
    assert_eq!(client.send_application_data(b"").ok(), Some(0));
    assert_eq!(client.send_application_data(b"now").ok(), Some(3));
    let mut s = Side::default();
    pump(
        client.as_mut(),
        &mut Side::default(),
        server.as_mut(),
        &mut |_| false,
    );
    pump(server.as_mut(), &mut s, client.as_mut(), &mut |_| false);
    assert_eq!(s.data, [b"now".to_vec()]);
}

/// A lost flight is sent again when OpenSSL's timer (wall clock) fires.
#[test]
fn lost_flight_is_retransmitted() {
    let (cc, sc) = (generated(), generated());
    let start = Instant::now();
    let (mut client, mut server) = (ours(&cc, start), ours(&sc, start));
    server.set_active(false);
    client.set_active(true);
    let (mut c, mut s) = (Side::default(), Side::default());
    // The server's first flight is lost.
    let mut lost = 0;
    pump(client.as_mut(), &mut c, server.as_mut(), &mut |_| false);
    pump(server.as_mut(), &mut s, client.as_mut(), &mut |_| {
        lost += 1;
        true
    });
    assert!(lost > 0);
    let deadline = start + Duration::from_secs(5);
    while !(c.connected && s.connected) {
        assert!(Instant::now() < deadline, "no retransmission within 5 s");
        // The first retransmission comes after 100 ms, not OpenSSL's 1 s.
        if s.connected {
            assert!(
                start.elapsed() < Duration::from_millis(900),
                "{:?}",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        client.handle_timeout(now).expect("client timeout");
        server.handle_timeout(now).expect("server timeout");
        pump(client.as_mut(), &mut c, server.as_mut(), &mut |_| false);
        pump(server.as_mut(), &mut s, client.as_mut(), &mut |_| false);
    }
    assert_agreed(&c, &s, &cc, &sc);
}

/// The handshake timer is reported as the next timeout while it runs.
#[test]
fn timeout_follows_the_retransmission_timer() {
    let now = Instant::now();
    let mut client = ours(&generated(), now);
    client.set_active(true);
    let mut buf = vec![0u8; 2048];
    let timeout = loop {
        if let DtlsOutput::Timeout(t) = client.poll_output(&mut buf) {
            break t;
        }
    };
    assert!(
        timeout > now && timeout <= now + Duration::from_secs(2),
        "{timeout:?}"
    );
}

/// Garbage neither panics nor connects; a server still connects after it.
#[test]
fn garbage_is_survived() {
    let now = Instant::now();
    let (cc, sc) = (generated(), generated());
    let mut server = ours(&sc, now);
    server.set_active(false);
    for junk in [
        &[][..],
        &[22, 0xfe, 0xfd][..],
        &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3][..],
        &[0x17; 300][..],
    ] {
        let _ = server.handle_packet(junk);
    }
    let mut out = Side::default();
    let mut sink = ours(&cc, now);
    pump(server.as_mut(), &mut out, sink.as_mut(), &mut |_| true);
    assert!(!out.connected);
    let mut client = ours(&cc, now);
    let mut fresh = ours(&sc, now);
    let (c, s) = handshake(client.as_mut(), fresh.as_mut());
    assert_agreed(&c, &s, &cc, &sc);
}

#[test]
fn dtls13_is_refused() {
    let r = OPENSSL_DTLS.new_dtls(&generated(), Instant::now(), DtlsVersion::Dtls13, None);
    assert!(r.is_err());
}

/// Two str0m `Rtc`s in memory, one on this provider, one on str0m's
/// default: they connect, a data channel message arrives (DTLS application
/// data, SCTP) and Opus frames arrive (SRTP keyed by the exported
/// material). Ours answers (so is the DTLS server, as the server is in
/// WHIP), then offers (the DTLS client).
#[test]
fn rtc_with_ours_talks_to_rtc_with_default() {
    rtc_pair(false);
    rtc_pair(true);
}

fn rtc_pair(ours_offers: bool) {
    use std::net::SocketAddr;
    use str0m::change::SdpOffer;
    use str0m::media::{Direction, MediaKind, MediaTime};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

    #[derive(Default)]
    struct Seen {
        connected: bool,
        message: Option<Vec<u8>>,
        frames: usize,
    }

    /// Polls `from` to its timeout, delivering its datagrams to `to`.
    fn drain(
        from: &mut Rtc,
        to: &mut Rtc,
        from_addr: SocketAddr,
        to_addr: SocketAddr,
        now: Instant,
        seen: &mut Seen,
    ) -> Instant {
        loop {
            match from.poll_output() {
                Ok(Output::Timeout(t)) => return t.max(now + Duration::from_millis(1)),
                Ok(Output::Transmit(t)) => {
                    let contents = (&*t.contents).try_into().expect("contents");
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source: from_addr,
                            destination: to_addr,
                            contents,
                        },
                    );
                    to.handle_input(input).expect("receive");
                }
                Ok(Output::Event(Event::Connected)) => seen.connected = true,
                Ok(Output::Event(Event::ChannelData(d))) => seen.message = Some(d.data),
                Ok(Output::Event(Event::MediaData(_))) => seen.frames += 1,
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("rtc error: {e}"),
            }
        }
    }

    let start = Instant::now();
    let addr_a: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
    let addr_b: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
    // a: the offerer (DTLS client), b: the answerer (DTLS server).
    let ours = || RtcConfig::new().set_crypto_provider(super::crypto_provider());
    let (mut a, mut b) = if ours_offers {
        (ours().build(start), RtcConfig::new().build(start))
    } else {
        (RtcConfig::new().build(start), ours().build(start))
    };
    a.add_local_candidate(Candidate::host(addr_a, "udp").expect("candidate"));
    b.add_local_candidate(Candidate::host(addr_b, "udp").expect("candidate"));

    let mut change = a.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let channel = change.add_channel("chat".into());
    let (offer, pending) = change.apply().expect("offer");
    let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).expect("parse offer");
    let answer = b.sdp_api().accept_offer(offer).expect("answer");
    a.sdp_api()
        .accept_answer(pending, answer)
        .expect("accept answer");

    let mut now = start;
    let (mut a_connected, mut b_connected) = (false, false);
    let mut got_message = None;
    let mut frames = 0;
    let mut sent_message = false;
    let mut frame_no: u64 = 0;
    while now < start + Duration::from_secs(10) && !(got_message.is_some() && frames >= 5) {
        // Opus frames from a, 20 ms apart, once connected.
        if a_connected {
            let pt = a
                .writer(mid)
                .and_then(|w| w.payload_params().next().map(|p| p.pt()));
            if let (Some(pt), Some(writer)) = (pt, a.writer(mid)) {
                {
                    let rtp_time = MediaTime::from_90khz(frame_no * 1800);
                    let _ = writer.write(pt, now, rtp_time, vec![0xfc, 0xff, 0xfe]);
                    frame_no += 1;
                }
            }
            if !sent_message {
                if let Some(mut ch) = a.channel(channel) {
                    sent_message = ch.write(false, b"hello over openssl").is_ok();
                }
            }
        }
        let mut next = now + Duration::from_millis(20);
        let mut seen = Seen::default();
        next = next.min(drain(&mut a, &mut b, addr_a, addr_b, now, &mut seen));
        a_connected |= seen.connected;
        let mut seen_b = Seen::default();
        next = next.min(drain(&mut b, &mut a, addr_b, addr_a, now, &mut seen_b));
        b_connected |= seen_b.connected;
        for s in [seen, seen_b] {
            frames += s.frames;
            if s.message.is_some() {
                got_message = s.message;
            }
        }
        now = next;
        a.handle_input(Input::Timeout(now)).expect("a timeout");
        b.handle_input(Input::Timeout(now)).expect("b timeout");
    }
    assert!(
        a_connected && b_connected,
        "not connected (ours offers: {ours_offers})"
    );
    assert_eq!(got_message.as_deref(), Some(&b"hello over openssl"[..]));
    assert!(frames >= 5, "{frames} Opus frames decrypted by ours");
}
