//! The OpenSSL DTLS 1.2 context every session's handshake starts from,
//! one for the process, and each session's own certificate and key.
//!
//! What the context settles: the DTLS-SRTP
//! profiles offered and their preference, the ECDHE cipher suites (ECDSA
//! for our own certificate, RSA too for a peer that is the DTLS server with
//! an RSA certificate), and the peer certificate policy: one is required
//! of the client (the server sends a CertificateRequest listing OpenSSL's
//! signature algorithms, RSA included, which is what GStreamer's webrtcbin
//! needs) and any certificate is accepted, because WebRTC authenticates the
//! peer by the fingerprint in its SDP, which str0m checks on the DER the
//! instance hands it. Each session presents its own certificate (str0m's
//! `DtlsCert`: DER certificate, PKCS#8 key; ECDSA P-256 as generated),
//! set on its `Ssl`: a context per session cost ~100 KB a session more
//! than dimpl did (500 listeners: 382-388 MB peak against 332-335).
//! Idle sessions give their record buffers back (`RELEASE_BUFFERS`).

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslSessionCacheMode,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use std::sync::OnceLock;
use str0m_proto::crypto::dtls::{DtlsCert, SrtpProfile};

/// DTLS-SRTP profiles in our order of preference, dimpl's (str0m's default
/// DTLS) order: when we are the server the first one the client offers wins.
pub(super) const SRTP_PROFILES: &str =
    "SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";

/// ECDHE with AEAD first; the CBC suites stay for older DTLS stacks.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:\
ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA";

/// ECDHE groups, OpenSSL's default order, and P-224 last: in DTLS 1.2
/// OpenSSL accepts a peer's ECDSA certificate, and uses its own, only on a
/// curve in this list (FFmpeg's WHIP muxer signs on P-224).
const GROUPS: &str = "X25519:P-256:X448:P-521:P-384:P-224";

/// The str0m profile for one OpenSSL negotiated, if str0m has it.
pub(super) fn srtp_profile(id: openssl::srtp::SrtpProfileId) -> Option<SrtpProfile> {
    use openssl::srtp::SrtpProfileId as Id;
    match id {
        Id::SRTP_AES128_CM_SHA1_80 => Some(SrtpProfile::AES128_CM_SHA1_80),
        Id::SRTP_AEAD_AES_128_GCM => Some(SrtpProfile::AEAD_AES_128_GCM),
        Id::SRTP_AEAD_AES_256_GCM => Some(SrtpProfile::AEAD_AES_256_GCM),
        _ => None,
    }
}

/// A session's certificate and private key, parsed.
pub(super) struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// `cert` parsed: the key as PKCS#8 DER, or any DER OpenSSL reads.
pub(super) fn identity(cert: &DtlsCert) -> Result<Identity, ErrorStack> {
    let der = &cert.private_key;
    Ok(Identity {
        cert: X509::from_der(&cert.certificate)?,
        key: PKey::private_key_from_pkcs8(der).or_else(|_| PKey::private_key_from_der(der))?,
    })
}

/// The process's DTLS 1.2 context (built at its first use; a clone is a
/// reference to it).
pub(super) fn shared() -> Result<SslContext, String> {
    static SHARED: OnceLock<Result<SslContext, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| builder().map(|b| b.build()).map_err(|e| e.to_string()))
        .clone()
}

/// The shared context's settings, before it is built (tests change what
/// it offers).
pub(super) fn builder() -> Result<SslContextBuilder, ErrorStack> {
    let mut ctx = SslContext::builder(SslMethod::dtls())?;
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    ctx.set_cipher_list(CIPHERS)?;
    ctx.set_groups_list(GROUPS)?;
    ctx.set_tlsext_use_srtp(SRTP_PROFILES)?;
    // The MTU is the one str0m passes (SSL_set_mtu per session): our BIO is
    // a queue, there is no socket to ask.
    ctx.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    // WebRTC never resumes a DTLS session: nothing to cache.
    ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
    // Retried writes may move (the caller's buffer is not pinned); buffers
    // of an idle session are freed.
    ctx.set_mode(SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::RELEASE_BUFFERS);
    // Ask for the peer's certificate and accept whichever it is: its
    // fingerprint is checked against the SDP's a=fingerprint by str0m.
    ctx.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_preverified, _chain| true,
    );
    Ok(ctx)
}
