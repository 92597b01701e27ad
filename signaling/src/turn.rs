//! Time-limited TURN credentials in the TURN REST API scheme that coturn
//! implements (`use-auth-secret` / `static-auth-secret`): the username is
//! `<expiry unix time>:<identity>` and the credential is
//! `base64(HMAC-SHA1(secret, username))`. The server hands them out with
//! every session (WHIP/WHEP `Link` headers, the room protocol's `joined`), so
//! an operator runs coturn beside it with the same secret and no user table.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::IceServer;

/// TURN servers and the secret shared with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnAuth {
    /// `turn:`/`turns:` URLs (e.g. `turn:turn.example.org:3478?transport=udp`).
    pub urls: Vec<String>,
    pub secret: String,
    /// How long a credential stays valid.
    pub ttl_secs: u64,
}

impl TurnAuth {
    /// An ICE server entry with a credential for `identity`, valid until
    /// `now_unix + ttl`.
    pub fn issue(&self, identity: &str, now_unix: u64) -> IceServer {
        let username = format!("{}:{identity}", now_unix.saturating_add(self.ttl_secs));
        IceServer {
            urls: self.urls.clone(),
            credential: Some(credential(&self.secret, &username)),
            username: Some(username),
        }
    }

    /// `issue` at the current time.
    pub fn issue_now(&self, identity: &str) -> IceServer {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.issue(identity, now)
    }
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn credential(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let turn = TurnAuth {
            urls: vec!["turn:10.0.0.1:3478?transport=udp".into()],
            secret: "turn-secret".into(),
            ttl_secs: 3600,
        };
        let s = turn.issue("alice", 1_700_000_000);
        assert_eq!(s.username.as_deref(), Some("1700003600:alice"));
        // Computed independently with Python's hmac/hashlib.
        assert_eq!(
            s.credential.as_deref(),
            Some("E4vPY/Y6LWBxrSVVafd9LKs2lHA=")
        );
        assert_eq!(s.urls, turn.urls);
    }

    #[test]
    fn issued_credentials_expire_after_the_ttl() {
        let turn = TurnAuth {
            urls: vec![],
            secret: "s".into(),
            ttl_secs: 60,
        };
        let s = turn.issue_now("bob");
        let expiry: u64 = s
            .username
            .as_deref()
            .and_then(|u| u.split(':').next())
            .and_then(|t| t.parse().ok())
            .expect("expiry");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        assert!(
            expiry >= now + 59 && expiry <= now + 61,
            "{expiry} vs {now}"
        );
    }
}
