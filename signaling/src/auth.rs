//! Access tokens: LiveKit-compatible JWTs (HS256).
//!
//! A token's `iss` names an API key, `sub` the participant identity, and the
//! `video` grant says what the holder may do in which room. Tokens minted by
//! LiveKit's own tooling verify here unchanged, and [`KeySet::mint`] produces
//! tokens LiveKit would accept. Several keys can be valid at once (rotation).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(10);

/// The `video` grant of a LiveKit access token. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub room_join: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub room_admin: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub room_create: bool,
    /// Another node's bridge into the room (minted by the nodes themselves):
    /// it speaks for that node's participants.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_bridge: bool,
}

impl VideoGrant {
    /// LiveKit's defaults: publish/subscribe/data are allowed unless set false.
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }
    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe.unwrap_or(true)
    }
    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data.unwrap_or(true)
    }
}

/// The claims we read and write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default)]
    pub video: VideoGrant,
}

/// What a request may do, after the token checked out.
#[derive(Debug, Clone)]
pub struct Grant {
    pub identity: String,
    /// Display name (`name` claim).
    pub name: Option<String>,
    /// Initial participant metadata (`metadata` claim).
    pub metadata: Option<String>,
    pub video: VideoGrant,
}

/// Permission a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Publish,
    Subscribe,
    /// Join the room (the room protocol checks finer grants per action).
    Join,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing Authorization: Bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signed with unknown API key '{0}'")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token has no identity (sub)")]
    NoIdentity,
    #[error("token does not grant {0} in room '{1}'")]
    Forbidden(&'static str, String),
}

impl AuthError {
    /// 403 for a valid token lacking a grant, 401 for everything else.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::Forbidden(..))
    }
}

/// The API keys this server accepts: key -> secret.
#[derive(Clone, Default)]
pub struct KeySet {
    secrets: HashMap<String, String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("KeySet")
            .field("keys", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl KeySet {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        KeySet {
            secrets: pairs.into_iter().collect(),
        }
    }

    pub fn secret(&self, key: &str) -> Option<&str> {
        self.secrets.get(key).map(String::as_str)
    }

    /// Verify signature, time window and identity. Grants are checked by the caller.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        self.verify_at(token, unix_now())
    }

    pub fn verify_at(&self, token: &str, now: u64) -> Result<Grant, AuthError> {
        let claims = self.verified_claims(token, now)?;
        Ok(Grant {
            identity: claims.sub,
            name: claims.name,
            metadata: claims.metadata,
            video: claims.video,
        })
    }

    /// The same token with a new validity of `ttl` from `now` (LiveKit's
    /// `refresh_token`: a client that reconnects after its first token
    /// expired uses the last one it was sent).
    pub fn refresh_at(&self, token: &str, now: u64, ttl: Duration) -> Result<String, AuthError> {
        let claims = self.verified_claims(token, now)?;
        let secret = self
            .secret(&claims.iss)
            .ok_or_else(|| AuthError::UnknownKey(claims.iss.clone()))?;
        let claims = Claims {
            exp: now + ttl.as_secs(),
            nbf: Some(now),
            ..claims
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| AuthError::Malformed(e.to_string()))
    }

    /// Verify signature, time window and identity; the claims as signed.
    fn verified_claims(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        // Read `iss` unverified to select the secret, then verify for real.
        let mut peek = Validation::new(Algorithm::HS256);
        peek.insecure_disable_signature_validation();
        peek.validate_exp = false;
        peek.required_spec_claims.clear();
        let unverified =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&[]), &peek)
                .map_err(|e| AuthError::Malformed(e.to_string()))?;
        let key = unverified.claims.iss;
        let secret = self
            .secret(&key)
            .ok_or_else(|| AuthError::UnknownKey(key.clone()))?;

        let mut validation = Validation::new(Algorithm::HS256);
        // We check the time window ourselves against `now` (testable, explicit skew).
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
            _ => AuthError::Malformed(e.to_string()),
        })?;
        let claims = data.claims;
        let skew = CLOCK_SKEW.as_secs();
        if claims.exp.saturating_add(skew) < now {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
            return Err(AuthError::NotYetValid);
        }
        if claims.sub.is_empty() {
            return Err(AuthError::NoIdentity);
        }
        Ok(claims)
    }

    /// Sign a token with `key`'s secret.
    pub fn mint(
        &self,
        key: &str,
        identity: &str,
        video: VideoGrant,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let secret = self
            .secret(key)
            .ok_or_else(|| AuthError::UnknownKey(key.to_string()))?;
        mint_with_secret(key, secret, identity, video, ttl)
    }
}

/// Sign a token with an explicit key and secret.
pub fn mint_with_secret(
    key: &str,
    secret: &str,
    identity: &str,
    video: VideoGrant,
    ttl: Duration,
) -> Result<String, AuthError> {
    let now = unix_now();
    let claims = Claims {
        iss: key.to_string(),
        sub: identity.to_string(),
        exp: now + ttl.as_secs(),
        nbf: Some(now),
        name: None,
        metadata: None,
        video,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Malformed(e.to_string()))
}

impl Grant {
    /// Check that this grant allows `perm` in `room`.
    pub fn require(&self, room: &str, perm: Permission) -> Result<(), AuthError> {
        let v = &self.video;
        let room_ok = v.room.as_deref() == Some(room);
        let (allowed, what) = match perm {
            Permission::Publish => (v.can_publish(), "canPublish"),
            Permission::Subscribe => (v.can_subscribe(), "canSubscribe"),
            Permission::Join => (true, "roomJoin"),
        };
        if !room_ok || !v.room_join {
            return Err(AuthError::Forbidden("roomJoin", room.to_string()));
        }
        if !allowed {
            return Err(AuthError::Forbidden(what, room.to_string()));
        }
        Ok(())
    }
}

impl Grant {
    /// Room administration: `roomAdmin`, for `room` when the grant names one
    /// (a grant without a room administers every room).
    pub fn require_admin(&self, room: Option<&str>) -> Result<(), AuthError> {
        let v = &self.video;
        let room_ok = match (v.room.as_deref(), room) {
            (None, _) => true,
            (Some(granted), Some(wanted)) => granted == wanted,
            (Some(_), None) => false,
        };
        if v.room_admin && room_ok {
            Ok(())
        } else {
            Err(AuthError::Forbidden(
                "roomAdmin",
                room.unwrap_or("*").to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeySet {
        KeySet::new([
            ("devkey".to_string(), "secret".to_string()),
            ("newkey".to_string(), "other-secret".to_string()),
        ])
    }

    fn grant(room: &str) -> VideoGrant {
        VideoGrant {
            room: Some(room.into()),
            room_join: true,
            can_publish: Some(true),
            can_subscribe: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn roundtrip_and_grants() -> Result<(), AuthError> {
        let ks = keys();
        let t = ks.mint("devkey", "alice", grant("r1"), Duration::from_secs(60))?;
        let g = ks.verify(&t)?;
        assert_eq!(g.identity, "alice");
        g.require("r1", Permission::Publish)?;
        assert!(g
            .require("r1", Permission::Subscribe)
            .is_err_and(|e| e.is_forbidden()));
        assert!(g
            .require("r2", Permission::Publish)
            .is_err_and(|e| e.is_forbidden()));
        // key rotation: the second key verifies too
        let t2 = ks.mint("newkey", "bob", grant("r1"), Duration::from_secs(60))?;
        assert_eq!(ks.verify(&t2)?.identity, "bob");
        Ok(())
    }

    #[test]
    fn rejects_bad_tokens() -> Result<(), AuthError> {
        let ks = keys();
        let t = mint_with_secret("devkey", "wrong", "a", grant("r"), Duration::from_secs(60))?;
        assert_eq!(ks.verify(&t).err(), Some(AuthError::BadSignature));
        let t = mint_with_secret("nokey", "x", "a", grant("r"), Duration::from_secs(60))?;
        assert_eq!(
            ks.verify(&t).err(),
            Some(AuthError::UnknownKey("nokey".into()))
        );
        assert!(matches!(ks.verify("abc.def"), Err(AuthError::Malformed(_))));
        let t = ks.mint("devkey", "a", grant("r"), Duration::from_secs(60))?;
        assert_eq!(
            ks.verify_at(&t, unix_now() + 3600).err(),
            Some(AuthError::Expired)
        );
        assert_eq!(
            ks.verify_at(&t, unix_now() - 3600).err(),
            Some(AuthError::NotYetValid)
        );
        // within the skew allowance
        assert!(ks.verify_at(&t, unix_now() + 65).is_ok());
        Ok(())
    }

    #[test]
    fn livekit_defaults_allow_publish_and_subscribe() -> Result<(), AuthError> {
        // A grant as LiveKit tooling writes it: only room + roomJoin.
        let ks = keys();
        let video: VideoGrant = serde_json::from_str(r#"{"room":"x","roomJoin":true}"#)
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        let t = ks.mint("devkey", "a", video, Duration::from_secs(60))?;
        let g = ks.verify(&t)?;
        g.require("x", Permission::Publish)?;
        g.require("x", Permission::Subscribe)?;
        Ok(())
    }

    #[test]
    fn a_refreshed_token_keeps_identity_and_grants_with_a_new_expiry() {
        let keys = KeySet::new([("k".to_string(), "s3cret-s3cret-s3cret-s3cret".to_string())]);
        let video = VideoGrant {
            room: Some("r".into()),
            room_join: true,
            ..Default::default()
        };
        let token = keys
            .mint("k", "ann", video, Duration::from_secs(60))
            .expect("mint");
        let now = unix_now();
        let fresh = keys
            .refresh_at(&token, now, Duration::from_secs(600))
            .expect("refresh");
        // Still valid long after the first one expired.
        let grant = keys.verify_at(&fresh, now + 300).expect("valid");
        assert_eq!(grant.identity, "ann");
        assert_eq!(grant.video.room.as_deref(), Some("r"));
        assert!(grant.require("r", Permission::Join).is_ok());
        assert_eq!(
            keys.verify_at(&token, now + 300).err(),
            Some(AuthError::Expired)
        );
        assert_eq!(
            keys.refresh_at("garbage", now, Duration::from_secs(1))
                .err()
                .map(|e| e.is_forbidden()),
            Some(false)
        );
    }
}
