//! Webhooks: room started/finished, participant joined/left, track
//! published/unpublished, POSTed as JSON to the configured URLs.
//!
//! Signed the way LiveKit signs its webhooks, so existing receivers verify
//! them unchanged: `Authorization` carries a JWT (HS256, `iss` = API key)
//! whose `sha256` claim is the base64 SHA-256 of the body. Workers hand
//! events to [`Webhooks::emit`] (never blocking the packet path); one task
//! delivers them in order with a few retries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use signaling::room_protocol::{ParticipantInfo, TrackInfo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events waiting for delivery; more are dropped (and counted).
const QUEUE: usize = 1024;
const ATTEMPTS: u32 = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookRoom {
    pub name: String,
}

/// One webhook body (LiveKit's field names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub event: String,
    pub id: String,
    pub created_at: u64,
    pub room: WebhookRoom,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackInfo>,
}

impl WebhookEvent {
    pub fn new(event: &str, room: &str) -> WebhookEvent {
        WebhookEvent {
            event: event.to_string(),
            id: format!("EV_{:016x}", rand::random::<u64>()),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            room: WebhookRoom {
                name: room.to_string(),
            },
            participant: None,
            track: None,
        }
    }

    pub fn participant(mut self, p: ParticipantInfo) -> Self {
        self.participant = Some(p);
        self
    }

    pub fn track(mut self, t: TrackInfo) -> Self {
        self.track = Some(t);
        self
    }
}

/// The workers' handle: queue an event without waiting.
#[derive(Clone, Debug)]
pub struct Webhooks {
    tx: mpsc::Sender<WebhookEvent>,
}

impl Webhooks {
    pub fn emit(&self, event: WebhookEvent) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!("webhook queue full or closed; event dropped");
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WebhookClaims {
    iss: String,
    exp: u64,
    nbf: u64,
    sha256: String,
}

fn body_hash(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

/// The `Authorization` value for `body`.
pub fn sign(
    api_key: &str,
    secret: &str,
    body: &[u8],
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = WebhookClaims {
        iss: api_key.to_string(),
        exp: now + 300,
        nbf: now.saturating_sub(10),
        sha256: body_hash(body),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// What a receiver does: check the signature, expiry and body hash.
pub fn verify(secret: &str, authorization: &str, body: &[u8]) -> bool {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.leeway = 10;
    jsonwebtoken::decode::<WebhookClaims>(
        authorization.trim(),
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .is_ok_and(|d| d.claims.sha256 == body_hash(body))
}

/// Start delivering to `urls`, signing with `api_key`/`secret`. Returns
/// `None` when no URL is configured.
pub fn start(
    urls: Vec<String>,
    api_key: String,
    secret: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> Option<Webhooks> {
    if urls.is_empty() {
        return None;
    }
    let (tx, mut rx) = mpsc::channel::<WebhookEvent>(QUEUE);
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks off");
            return None;
        }
    };
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                e = rx.recv() => match e { Some(e) => e, None => break },
            };
            let Ok(body) = serde_json::to_vec(&event) else {
                continue;
            };
            let Ok(auth) = sign(&api_key, &secret, &body) else {
                continue;
            };
            for url in &urls {
                let ok = deliver(&client, url, &auth, &body).await;
                let result = if ok { "delivered" } else { "failed" };
                metrics.webhooks.with_label_values(&[result]).inc();
                if !ok {
                    tracing::warn!(%url, event = %event.event, "webhook not delivered");
                }
            }
        }
    });
    Some(Webhooks { tx })
}

async fn deliver(client: &reqwest::Client, url: &str, auth: &str, body: &[u8]) -> bool {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let sent = client
            .post(url)
            .header("Authorization", auth)
            .header("Content-Type", "application/webhook+json")
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => tracing::debug!(%url, status = %r.status(), "webhook refused"),
            Err(e) => tracing::debug!(%url, error = %e, "webhook failed"),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_bind_the_body() {
        let body = br#"{"event":"room_started"}"#;
        let auth = sign("devkey", "secret", body).unwrap();
        assert!(verify("secret", &auth, body));
        assert!(!verify("other", &auth, body), "wrong secret");
        assert!(
            !verify("secret", &auth, br#"{"event":"room_finished"}"#),
            "tampered body"
        );
        assert!(!verify("secret", "garbage", body));
    }

    #[test]
    fn events_use_livekit_field_names() {
        let e = WebhookEvent::new("participant_joined", "standup");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "participant_joined");
        assert_eq!(json["room"]["name"], "standup");
        assert!(json["createdAt"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000));
        assert!(json.get("participant").is_none());
    }
}
