//! Signaling for virtual participants: access tokens minted from the API
//! key and secret (the server's own token format), and WHIP/WHEP offers
//! POSTed over HTTP (RFC 9725), with the session deleted at the end.

use std::time::Duration;

use signaling::auth::{mint_with_secret, VideoGrant};

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    pub api_key: String,
    pub api_secret: String,
    pub http: reqwest::Client,
}

/// A session the server created.
#[derive(Debug, Clone)]
pub struct Created {
    /// The session's resource URL (absolute).
    pub resource: String,
    pub answer: String,
}

impl Target {
    pub fn new(base: &str, api_key: &str, api_secret: &str) -> Result<Target, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Target {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            http,
        })
    }

    pub fn token(
        &self,
        room: &str,
        identity: &str,
        publish: bool,
        subscribe: bool,
    ) -> Result<String, String> {
        let grant = VideoGrant {
            room: Some(room.into()),
            room_join: true,
            can_publish: Some(publish),
            can_subscribe: Some(subscribe),
            ..Default::default()
        };
        mint_with_secret(
            &self.api_key,
            &self.api_secret,
            identity,
            grant,
            Duration::from_secs(6 * 3600),
        )
        .map_err(|e| format!("token: {e}"))
    }

    /// POST an SDP offer to `path` (e.g. `/whip/room`); expects 201.
    pub async fn post_offer(
        &self,
        path: &str,
        token: &str,
        offer: &str,
    ) -> Result<Created, String> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(offer.to_string())
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            return Err(format!("POST {path}: {status}: {}", body.trim()));
        }
        let location = location.ok_or_else(|| format!("POST {path}: 201 without Location"))?;
        let resource = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        Ok(Created {
            resource,
            answer: body,
        })
    }

    /// End a session (best effort).
    pub async fn delete(&self, resource: &str, token: &str) {
        let _ = self.http.delete(resource).bearer_auth(token).send().await;
    }
}
