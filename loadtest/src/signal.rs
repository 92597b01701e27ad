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
    /// The node that produced the answer (`x-sfu-node`, cluster only).
    pub served_by: Option<String>,
}

/// The header a cluster node puts on every answer: its id.
pub const SERVED_BY: &str = "x-sfu-node";

fn served_by(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(SERVED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
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

    /// The same keys and HTTP client toward another server (another node
    /// of a cluster).
    pub fn at(&self, base: &str) -> Target {
        Target {
            base: base.trim_end_matches('/').to_string(),
            ..self.clone()
        }
    }

    /// The server's cluster node id (`x-sfu-node` on its `/healthz`);
    /// None when it does not answer or is not in a cluster.
    pub async fn node_id(&self) -> Option<String> {
        let resp = self
            .http
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        served_by(resp.headers())
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
        let served_by = served_by(resp.headers());
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
            served_by,
        })
    }

    /// End a session (best effort).
    pub async fn delete(&self, resource: &str, token: &str) {
        let _ = self.http.delete(resource).bearer_auth(token).send().await;
    }
}
