//! DTLS that accepts the certificates real WebRTC clients present.
//!
//! str0m's default DTLS (dimpl on aws-lc-rs) verifies client signatures for
//! ECDSA on P-256 and P-384 only. FFmpeg 8's WHIP muxer signs with an ECDSA
//! key on P-224 (secp224r1), so its handshake failed with "unsupported EC
//! curve". This module keeps dimpl and aws-lc-rs for everything and adds one
//! thing: a signature verifier that also verifies ECDSA on P-224 (RustCrypto
//! `p224`). The handshake itself (cipher suites, SRTP profiles, ECDHE
//! groups) is unchanged.
//!
//! Still not accepted: RSA client certificates (GStreamer's default), because
//! dimpl only offers ECDSA in its DTLS 1.2 CertificateRequest; such clients
//! fail the handshake and the session times out.

use std::sync::Arc;
use std::time::Instant;

use dimpl::crypto::{HashAlgorithm, SignatureAlgorithm, SignatureVerifier};
use str0m::config::CryptoProvider;
use str0m_proto::crypto::dtls::ProtocolVersion;
use str0m_proto::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider};
use str0m_proto::crypto::{CryptoError, DtlsVersion};

/// secp224r1 (RFC 5480).
const OID_P224: &str = "1.3.132.0.33";

/// Verifies like aws-lc-rs, plus ECDSA on P-224.
#[derive(Debug)]
struct CompatVerifier;

static COMPAT_VERIFIER: CompatVerifier = CompatVerifier;

fn aws_lc_provider() -> dimpl::crypto::CryptoProvider {
    dimpl::crypto::aws_lc_rs::default_provider()
}

impl SignatureVerifier for CompatVerifier {
    fn verify_signature(
        &self,
        cert_der: &[u8],
        data: &[u8],
        signature: &[u8],
        hash_alg: HashAlgorithm,
        sig_alg: SignatureAlgorithm,
    ) -> Result<(), dimpl::CryptoError> {
        let result = aws_lc_provider()
            .signature_verification
            .verify_signature(cert_der, data, signature, hash_alg, sig_alg);
        match result {
            Err(dimpl::CryptoError::UnsupportedEcCurve) if sig_alg == SignatureAlgorithm::ECDSA => {
                verify_p224(cert_der, data, signature, hash_alg)
            }
            other => other,
        }
    }
}

/// ECDSA verification for a certificate whose key is on P-224.
fn verify_p224(
    cert_der: &[u8],
    data: &[u8],
    signature: &[u8],
    hash_alg: HashAlgorithm,
) -> Result<(), dimpl::CryptoError> {
    use p224::ecdsa::signature::hazmat::PrehashVerifier;
    use sha2::Digest;
    use x509_cert::der::Decode;

    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|_| dimpl::CryptoError::CertificateParseFailed)?;
    let spki = &cert.tbs_certificate().subject_public_key_info();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok())
        .ok_or(dimpl::CryptoError::InvalidEcCurveParameter)?;
    if curve.to_string() != OID_P224 {
        return Err(dimpl::CryptoError::UnsupportedEcCurve);
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(dimpl::CryptoError::InvalidSubjectPublicKey)?;
    let key = p224::ecdsa::VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| dimpl::CryptoError::InvalidSubjectPublicKey)?;
    let sig = p224::ecdsa::Signature::from_der(signature)
        .map_err(|_| dimpl::CryptoError::UnsupportedEcCurve)?;
    let digest: Vec<u8> = match hash_alg {
        HashAlgorithm::SHA256 => sha2::Sha256::digest(data).to_vec(),
        HashAlgorithm::SHA384 => sha2::Sha384::digest(data).to_vec(),
        HashAlgorithm::SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => return Err(dimpl::CryptoError::UnsupportedEcCurve),
    };
    key.verify_prehash(&digest, &sig)
        .map_err(|_| dimpl::CryptoError::UnsupportedEcCurve)
}

/// The dimpl crypto provider of aws-lc-rs with [`CompatVerifier`].
fn compat_dimpl_provider() -> dimpl::crypto::CryptoProvider {
    dimpl::crypto::CryptoProvider {
        signature_verification: &COMPAT_VERIFIER,
        ..aws_lc_provider()
    }
}

/// str0m DTLS provider: dimpl with [`compat_dimpl_provider`].
#[derive(Debug)]
struct CompatDtlsProvider;

static COMPAT_DTLS: CompatDtlsProvider = CompatDtlsProvider;

impl DtlsProvider for CompatDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
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
        // ICE already proved return routability, so no server cookie round trip.
        let mut builder = dimpl::Config::builder()
            .use_server_cookie(false)
            .with_crypto_provider(compat_dimpl_provider());
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("DTLS config: {e}")))?,
        );
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )))
            }
        };
        Ok(Box::new(CompatDtls(dtls)))
    }
}

/// A dimpl session behind str0m's DTLS instance interface.
struct CompatDtls(dimpl::Dtls);

impl std::fmt::Debug for CompatDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompatDtls")
    }
}

impl DtlsInstance for CompatDtls {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active)
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

/// str0m's aws-lc-rs crypto with the compatible DTLS provider (built once).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &COMPAT_DTLS,
                ..str0m_aws_lc_rs::default_provider()
            })
        })
        .clone()
}
