//! DTLS on OpenSSL, so that every WebRTC client's certificate is accepted.
//!
//! str0m's default DTLS (dimpl) offers only ECDSA in its DTLS 1.2
//! CertificateRequest, so GStreamer's webrtcbin, which signs with an
//! RSA-2048 certificate, sent no certificate and its handshake failed
//! ("no client certificate received"). This module is a str0m
//! `DtlsProvider` on OpenSSL's DTLS 1.2 (the system libssl): its
//! CertificateRequest lists OpenSSL's signature algorithms, so RSA
//! (GStreamer), ECDSA on P-256 and P-384 (browsers, OBS) and on P-224
//! (FFmpeg's WHIP muxer) client certificates are all accepted. Our own
//! certificate stays ECDSA P-256, generated as str0m's default does (dimpl's
//! generator). SRTP, hashing and STUN stay on aws-lc-rs (str0m's provider).
//!
//! The pieces: [`context`] (the OpenSSL context: certificate, SRTP
//! profiles, ciphers, peer certificate policy), [`instance`] (one session
//! behind str0m's `DtlsInstance`), [`datagrams`] (the in-memory transport
//! OpenSSL reads and writes), [`timer`] (OpenSSL's retransmission timer).
//! OpenSSL 3.0 has no DTLS 1.3: sessions are DTLS 1.2, which is what str0m
//! asks for by default and what every WebRTC client speaks.

mod context;
mod datagrams;
mod instance;
mod timer;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use str0m::config::CryptoProvider;
use str0m_proto::crypto::dtls::{DtlsCert, DtlsInstance, DtlsProvider};
use str0m_proto::crypto::{CryptoError, DtlsVersion};

/// The record size when str0m passes no MTU (its own default target).
const DEFAULT_MTU: u32 = 1150;

/// str0m DTLS provider on OpenSSL.
#[derive(Debug)]
pub struct OpensslDtlsProvider;

/// The provider [`crypto_provider`] uses.
pub static OPENSSL_DTLS: OpensslDtlsProvider = OpensslDtlsProvider;

impl DtlsProvider for OpensslDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        // ECDSA P-256 with a random serial (Firefox wants serials unique
        // across processes), as str0m's default provider generates it.
        let cert = dimpl::certificate::generate_self_signed_certificate().ok()?;
        Some(DtlsCert {
            certificate: cert.certificate,
            private_key: cert.private_key,
        })
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        match version {
            DtlsVersion::Dtls12 | DtlsVersion::Auto => {}
            other => {
                return Err(CryptoError::Other(format!(
                    "{other} is not supported by the OpenSSL DTLS provider (DTLS 1.2 only)"
                )))
            }
        }
        let ctx =
            context::shared().map_err(|e| CryptoError::Other(format!("DTLS context: {e}")))?;
        let identity = context::identity(cert)
            .map_err(|e| CryptoError::Other(format!("DTLS certificate: {e}")))?;
        let mtu = mtu
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(DEFAULT_MTU);
        Ok(Box::new(instance::OpensslDtls::new(
            ctx, identity, mtu, now,
        )))
    }
}

/// str0m's aws-lc-rs crypto with the OpenSSL DTLS provider (built once).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &OPENSSL_DTLS,
                ..str0m_aws_lc_rs::default_provider()
            })
        })
        .clone()
}
