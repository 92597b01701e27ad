//! One DTLS session: an OpenSSL `SslStream` behind str0m's `DtlsInstance`.
//!
//! str0m drives the session sans-IO: datagrams in (`handle_packet`), time
//! (`handle_timeout`), and `poll_output` until it returns a `Timeout`. This
//! module turns OpenSSL's blocking-style calls into that: the stream runs
//! over [`Datagrams`], every call that can progress the handshake or read
//! records runs until OpenSSL wants more input, and what it produced is
//! handed out in the order dimpl (str0m's default) hands it out: datagrams
//! to send first, then the events `PeerCert` (the DER str0m fingerprints),
//! `Connected`, `KeyingMaterial` (the `EXTRACTOR-dtls_srtp` export for the
//! negotiated profile), then received application data (SCTP), and last
//! the next `Timeout`.
//!
//! Nothing received from the network panics: OpenSSL failures become
//! `DtlsImplError`s (their OpenSSL reason logged, which the error type has
//! no room for), and a session that failed or closed drops what it gets.
//! An output larger than str0m's poll buffer (2000 bytes: a peer
//! certificate or a received record that large) is `BufferTooSmall`, which
//! str0m treats as an error, as it does with dimpl.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, Ssl, SslContext, SslStream};
use str0m_proto::crypto::dtls::SrtpProfile;
use str0m_proto::crypto::dtls::{DtlsCryptoError, DtlsCryptoOperation, DtlsImplError};
use str0m_proto::crypto::dtls::{DtlsInstance, DtlsOutput, KeyingMaterial, ProtocolVersion};

use super::context::{srtp_profile, Identity};
use super::datagrams::Datagrams;
use super::timer::{self, Fired};

/// The timeout polled while no retransmission timer runs.
const IDLE: Duration = Duration::from_secs(24 * 3600);

/// The largest DTLS record plaintext (2^14).
const MAX_RECORD: usize = 16 * 1024;

/// The RFC 5764 exporter label for DTLS-SRTP keys.
const SRTP_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// What the session has to tell str0m after its datagrams.
#[derive(Debug)]
enum Event {
    PeerCert(Vec<u8>),
    Connected,
    KeyingMaterial(Vec<u8>, SrtpProfile),
    Data(Vec<u8>),
    CloseNotify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `set_active`: no role, no stream.
    New,
    Handshaking,
    Connected,
    /// `close` was called; closed once its close_notify has been polled.
    Closing,
    Closed,
    /// The handshake or a record failed fatally.
    Failed,
}

/// A DTLS 1.2 session on OpenSSL.
pub(super) struct OpensslDtls {
    ctx: SslContext,
    /// Our certificate and key, until the session's `Ssl` takes them.
    identity: Option<Identity>,
    mtu: u32,
    active: Option<bool>,
    stream: Option<SslStream<Datagrams>>,
    phase: Phase,
    events: VecDeque<Event>,
    /// The last time str0m gave us (OpenSSL's timer runs on its own clock).
    now: Instant,
    /// A failure of `set_active`'s first flight, reported by the next call
    /// that can return one.
    deferred: Option<DtlsImplError>,
    /// Where records are read into (allocated at the first read).
    read_buf: Vec<u8>,
}

impl std::fmt::Debug for OpensslDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpensslDtls")
            .field("active", &self.active)
            .field("phase", &self.phase)
            .finish()
    }
}

/// An OpenSSL failure as str0m's DTLS error; its reason goes to the log.
fn failed(what: &str, op: DtlsCryptoOperation, e: &openssl::ssl::Error) -> DtlsImplError {
    tracing::info!("DTLS {what} failed: {e}");
    DtlsImplError::CryptoError(DtlsCryptoError::OperationFailed(op))
}

fn wants_io(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE
}

impl OpensslDtls {
    pub(super) fn new(ctx: SslContext, identity: Identity, mtu: u32, now: Instant) -> Self {
        OpensslDtls {
            ctx,
            identity: Some(identity),
            mtu,
            active: None,
            stream: None,
            phase: Phase::New,
            events: VecDeque::new(),
            now,
            deferred: None,
            read_buf: Vec::new(),
        }
    }

    fn start(&mut self, active: bool) -> Result<(), openssl::error::ErrorStack> {
        let mut ssl = Ssl::new(&self.ctx)?;
        if let Some(id) = self.identity.take() {
            ssl.set_certificate(&id.cert)?;
            ssl.set_private_key(&id.key)?;
        }
        ssl.set_mtu(self.mtu)?;
        timer::start_sooner(&mut ssl);
        if active {
            ssl.set_connect_state();
        } else {
            ssl.set_accept_state();
        }
        self.stream = Some(SslStream::new(ssl, Datagrams::default())?);
        self.phase = Phase::Handshaking;
        Ok(())
    }

    /// Runs the handshake as far as the datagrams received allow, then
    /// reads whatever records follow it.
    fn progress(&mut self) -> Result<(), DtlsImplError> {
        if self.phase == Phase::Handshaking {
            self.handshake()?;
        }
        if self.phase == Phase::Connected || self.phase == Phase::Closing {
            self.read_records()?;
        }
        Ok(())
    }

    fn handshake(&mut self) -> Result<(), DtlsImplError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        match stream.do_handshake() {
            Ok(()) => self.connected(),
            Err(e) if wants_io(&e) => Ok(()),
            Err(e) => {
                self.phase = Phase::Failed;
                Err(failed("handshake", DtlsCryptoOperation::VerifyData, &e))
            }
        }
    }

    /// Queues the events of a completed handshake.
    fn connected(&mut self) -> Result<(), DtlsImplError> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(());
        };
        let ssl = stream.ssl();
        let Some(cert) = ssl.peer_certificate() else {
            // OpenSSL requires one of either side (FAIL_IF_NO_PEER_CERT).
            self.phase = Phase::Failed;
            return Err(DtlsImplError::CertificateError(
                dimpl::CertificateError::NoClientCertificateReceived,
            ));
        };
        let der = cert.to_der().map_err(|e| {
            tracing::info!("DTLS peer certificate: {e}");
            DtlsImplError::CertificateError(dimpl::CertificateError::ParseFailed)
        })?;
        let keying = match ssl.selected_srtp_profile().map(|p| (p.name(), p.id())) {
            Some((name, id)) => match srtp_profile(id) {
                Some(profile) => {
                    let mut km = vec![0u8; profile.keying_material_len()];
                    ssl.export_keying_material(&mut km, SRTP_LABEL, None)
                        .map_err(|e| {
                            tracing::info!("DTLS-SRTP key export: {e}");
                            DtlsImplError::CryptoError(DtlsCryptoError::OperationFailed(
                                DtlsCryptoOperation::ExtractSrtpKeyingMaterial,
                            ))
                        })?;
                    Some((km, profile))
                }
                None => {
                    tracing::info!("DTLS negotiated SRTP profile {name}, which str0m lacks");
                    None
                }
            },
            None => {
                tracing::debug!("DTLS connected without an SRTP profile");
                None
            }
        };
        tracing::debug!(
            peer_key = %peer_key(&cert),
            cipher = ssl.current_cipher().map_or("none", |c| c.name()),
            srtp = ?keying.as_ref().map(|k| k.1),
            "DTLS connected"
        );
        self.events.push_back(Event::PeerCert(der));
        self.events.push_back(Event::Connected);
        if let Some((km, profile)) = keying {
            self.events.push_back(Event::KeyingMaterial(km, profile));
        }
        self.phase = Phase::Connected;
        Ok(())
    }

    fn read_records(&mut self) -> Result<(), DtlsImplError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let buf = &mut self.read_buf;
        buf.resize(MAX_RECORD, 0);
        loop {
            match stream.ssl_read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.events.push_back(Event::Data(buf[..n].to_vec())),
                Err(e) if wants_io(&e) => return Ok(()),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.events.push_back(Event::CloseNotify);
                    return Ok(());
                }
                Err(e) => {
                    self.phase = Phase::Failed;
                    return Err(failed("read", DtlsCryptoOperation::Decrypt, &e));
                }
            }
        }
    }

    fn outgoing(&mut self) -> Option<&mut VecDeque<Vec<u8>>> {
        self.stream.as_mut().map(|s| &mut s.get_mut().outgoing)
    }
}

/// The peer certificate's key, as "RSA 2048" or "EC 224" (for the log).
fn peer_key(cert: &openssl::x509::X509) -> String {
    match cert.public_key() {
        Ok(key) => {
            let kind = match key.id() {
                openssl::pkey::Id::RSA => "RSA",
                openssl::pkey::Id::EC => "EC",
                openssl::pkey::Id::ED25519 => "Ed25519",
                _ => "other",
            };
            format!("{kind} {}", key.bits())
        }
        Err(_) => "unreadable".into(),
    }
}

/// Copies `data` into `buf`, or says how large `buf` must be.
fn copy_out<'a>(data: &[u8], buf: &'a mut [u8]) -> Result<&'a [u8], usize> {
    let out = buf.get_mut(..data.len()).ok_or(data.len())?;
    out.copy_from_slice(data);
    Ok(out)
}

impl DtlsInstance for OpensslDtls {
    fn set_active(&mut self, active: bool) {
        if let Some(was) = self.active {
            if was != active {
                tracing::warn!("DTLS role change to active={active} ignored (is active={was})");
            }
            return;
        }
        self.active = Some(active);
        if let Err(e) = self.start(active) {
            tracing::warn!("DTLS session setup: {e}");
            self.phase = Phase::Failed;
            self.deferred = Some(DtlsImplError::CryptoError(
                DtlsCryptoError::OperationFailed(DtlsCryptoOperation::CreateCipher),
            ));
            return;
        }
        // The client sends its ClientHello now; a server waits for it.
        if active {
            if let Err(e) = self.handshake() {
                self.deferred = Some(e);
            }
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        match self.phase {
            Phase::Handshaking | Phase::Connected | Phase::Closing => {}
            Phase::New => {
                tracing::debug!("DTLS datagram before the role is known, dropped");
                return Ok(());
            }
            Phase::Closed | Phase::Failed => return Ok(()),
        }
        // str0m sends an empty "packet" to make a client start; for OpenSSL
        // an empty read would be end of stream, so it never gets one.
        if let (Some(stream), false) = (self.stream.as_mut(), packet.is_empty()) {
            stream.get_mut().incoming.push_back(packet.to_vec());
        }
        self.progress()
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(out) = self.outgoing() {
            if let Some(datagram) = out.pop_front() {
                return match copy_out(&datagram, buf) {
                    Ok(packet) => DtlsOutput::Packet(packet),
                    Err(needed) => {
                        out.push_front(datagram);
                        DtlsOutput::BufferTooSmall { needed }
                    }
                };
            }
        }
        if self.phase == Phase::Closing {
            self.phase = Phase::Closed;
        }
        if let Some(event) = self.events.pop_front() {
            let copied = match &event {
                Event::PeerCert(d) | Event::Data(d) => match copy_out(d, buf) {
                    Ok(data) => Some(data),
                    Err(needed) => {
                        self.events.push_front(event);
                        return DtlsOutput::BufferTooSmall { needed };
                    }
                },
                _ => None,
            };
            return match (event, copied) {
                (Event::PeerCert(_), Some(der)) => DtlsOutput::PeerCert(der),
                (Event::Data(_), Some(data)) => DtlsOutput::ApplicationData(data),
                (Event::Connected, _) => DtlsOutput::Connected,
                (Event::KeyingMaterial(km, profile), _) => {
                    DtlsOutput::KeyingMaterial(KeyingMaterial::new(&km), profile)
                }
                (Event::CloseNotify, _) => DtlsOutput::CloseNotify,
                // PeerCert and Data always have their copy.
                (Event::PeerCert(_) | Event::Data(_), None) => DtlsOutput::Timeout(self.now),
            };
        }
        let wait = match (&self.phase, &self.stream) {
            (Phase::Handshaking, Some(stream)) => timer::get_timeout(stream.ssl()).unwrap_or(IDLE),
            _ => IDLE,
        };
        DtlsOutput::Timeout(self.now + wait)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if self.phase != Phase::Handshaking {
            return Ok(());
        }
        let Some(stream) = self.stream.as_ref() else {
            return Ok(());
        };
        match timer::handle_timeout(stream.ssl()) {
            Fired::Nothing => Ok(()),
            Fired::Retransmitted => {
                tracing::debug!("DTLS flight retransmitted");
                Ok(())
            }
            Fired::GaveUp => {
                self.phase = Phase::Failed;
                tracing::info!("DTLS handshake gave up: no answer to its retransmissions");
                Err(DtlsImplError::Timeout(dimpl::TimeoutError::Handshake))
            }
        }
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        match self.phase {
            Phase::Connected => {}
            Phase::New | Phase::Handshaking => return Ok(0),
            Phase::Closing | Phase::Closed | Phase::Failed => {
                return Err(DtlsImplError::ConnectionClosed)
            }
        }
        if data.is_empty() {
            return Ok(0);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0);
        };
        match stream.ssl_write(data) {
            Ok(n) => Ok(n),
            Err(e) if wants_io(&e) => Ok(0),
            Err(e) => {
                self.phase = Phase::Failed;
                Err(failed("write", DtlsCryptoOperation::Encrypt, &e))
            }
        }
    }

    fn is_active(&self) -> bool {
        self.active.unwrap_or(false)
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        match self.phase {
            Phase::Connected | Phase::Closing => Some(ProtocolVersion::DTLS1_2),
            _ => None,
        }
    }

    fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if self.phase != Phase::Connected {
            self.phase = Phase::Closed;
            return Ok(());
        }
        self.phase = Phase::Closing;
        if let Some(stream) = self.stream.as_mut() {
            // Sends close_notify (into `outgoing`); we do not wait for the
            // peer's, so WANT_READ is the expected answer too.
            if let Err(e) = stream.shutdown() {
                if !wants_io(&e) {
                    tracing::debug!("DTLS close_notify: {e}");
                }
            }
        }
        Ok(())
    }
}
