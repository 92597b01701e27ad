//! Feeds the access-token verifier, `signaling::auth::KeySet::verify_at`,
//! which runs on every `Authorization: Bearer` header and `/rtc?access_token=`.
//! The first input byte picks a mode, the rest is the payload:
//! - 0: the payload, as text, is the token.
//! - 1: a token minted with `mint_with_secret` gets the payload spliced in as
//!   its claims (base64url-encoded), keeping the original signature.
//! - 2: as 1, re-signed with the right secret, so the claims are decoded and
//!   checked (time window, identity) as for a genuine token.
//! - 3: the payload is spliced in as the header (re-signed), claims kept.
//! - 4: the payload, as text, is the identity of a minted token, which must
//!   verify to that identity.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use signaling::auth::{mint_with_secret, AuthError, KeySet, Permission, VideoGrant, CLOCK_SKEW};

const KEY: &str = "devkey";
const SECRET: &str = "secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn grant() -> VideoGrant {
    VideoGrant {
        room: Some("room".into()),
        room_join: true,
        ..Default::default()
    }
}

fn minted(identity: &str) -> Option<String> {
    mint_with_secret(KEY, SECRET, identity, grant(), Duration::from_secs(600)).ok()
}

fn sign(header: &str, claims: &str) -> String {
    let message = format!("{header}.{claims}");
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HMAC signing does not fail");
    format!("{message}.{signature}")
}

/// Exercise what a handler does with a grant after verification.
fn use_grant(keys: &KeySet, token: &str, now: u64) -> Result<String, AuthError> {
    let g = keys.verify_at(token, now)?;
    assert!(!g.identity.is_empty(), "a verified token has an identity");
    for perm in [Permission::Publish, Permission::Subscribe, Permission::Join] {
        let _ = g.require("room", perm);
    }
    let _ = g.require_admin(Some("room"));
    let _ = g.require_admin(None);
    Ok(g.identity)
}

/// The claims every verified token must carry.
#[derive(serde::Deserialize)]
struct Verified {
    sub: String,
    exp: u64,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let keys = KeySet::new([(KEY.to_string(), SECRET.to_string())]);
    let now = now();
    let Some(base) = minted("alice") else {
        panic!("minting with a fixed identity fails");
    };
    let parts: Vec<&str> = base.split('.').collect();
    assert_eq!(parts.len(), 3);
    let (header, claims, signature) = (parts[0], parts[1], parts[2]);
    let spliced = URL_SAFE_NO_PAD.encode(payload);
    match mode % 5 {
        0 => {
            let token = String::from_utf8_lossy(payload);
            let _ = use_grant(&keys, &token, now);
        }
        1 => {
            let token = format!("{header}.{spliced}.{signature}");
            let result = use_grant(&keys, &token, now);
            if spliced != claims {
                assert!(
                    result.is_err(),
                    "claims changed under the old signature: {token}"
                );
            }
        }
        2 => {
            let token = sign(header, &spliced);
            if let Ok(identity) = use_grant(&keys, &token, now) {
                // Whatever verified must satisfy the documented checks.
                // serde_json does not check UTF-8 inside fields it ignores
                // (unknown claims), so read the claims back leniently, and
                // typed, as the server does: an ignored field may hold a
                // number no f64 holds (1e7000000), which a Value refuses.
                let text = String::from_utf8_lossy(payload);
                let v: Verified =
                    serde_json::from_str(&text).expect("verified claims have sub and exp");
                assert_eq!(v.sub, identity);
                assert!(v.exp.saturating_add(CLOCK_SKEW.as_secs()) >= now);
            }
        }
        3 => {
            let token = sign(&spliced, claims);
            let _ = use_grant(&keys, &token, now);
        }
        _ => {
            let identity = String::from_utf8_lossy(payload);
            let Some(token) = minted(&identity) else {
                return;
            };
            match use_grant(&keys, &token, now) {
                Ok(got) => assert_eq!(got, identity),
                Err(e) => assert!(identity.is_empty() && e == AuthError::NoIdentity, "{e}"),
            }
        }
    }
});
