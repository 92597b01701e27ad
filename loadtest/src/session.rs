//! One WHIP or WHEP session of a virtual participant from start to end:
//! offer, POST, answer, run the peer until the scenario ends, DELETE.
//! Failures are returned, not thrown: a load test counts them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::peer::{offer, Clock, Ending, Live, Media};
use crate::receive::ReceiveStats;
use crate::signal::Target;

/// What to start.
pub struct SessionPlan {
    /// `/whip/{room}` or `/whep/{room}?...`.
    pub path: String,
    pub token: String,
    pub media: Media,
    pub bind: IpAddr,
    pub ending: Ending,
}

/// How a session went.
#[derive(Debug)]
pub struct SessionResult {
    pub connected: bool,
    pub stats: ReceiveStats,
    pub error: Option<String>,
    /// From the POST to the answer.
    pub signaling_ms: Option<f64>,
    /// The cluster node that answered (`x-sfu-node`), when known.
    pub served_by: Option<String>,
}

impl SessionResult {
    pub fn failed(error: String) -> SessionResult {
        SessionResult {
            connected: false,
            stats: ReceiveStats::default(),
            error: Some(error),
            signaling_ms: None,
            served_by: None,
        }
    }
}

pub async fn run_session(
    target: Arc<Target>,
    plan: SessionPlan,
    clock: Clock,
    live: Arc<Live>,
    cancel: CancellationToken,
) -> SessionResult {
    let offered = match offer(plan.bind, &plan.media).await {
        Ok(o) => o,
        Err(e) => {
            live.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return SessionResult::failed(format!("socket: {e}"));
        }
    };
    let posted_at = Instant::now();
    let created = tokio::select! {
        _ = cancel.cancelled() => return SessionResult::failed("cancelled before the answer".into()),
        r = target.post_offer(&plan.path, &plan.token, &offered.offer) => r,
    };
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            live.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return SessionResult::failed(e);
        }
    };
    let signaling_ms = posted_at.elapsed().as_secs_f64() * 1000.0;
    let peer = match offered.accept(&created.answer, plan.media) {
        Ok(p) => p,
        Err(e) => {
            live.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            target.delete(&created.resource, &plan.token).await;
            return SessionResult::failed(e);
        }
    };
    let served_by = created.served_by.clone();
    let peer = peer.run(clock, live, cancel, plan.ending).await;
    if plan.ending == Ending::Graceful {
        target.delete(&created.resource, &plan.token).await;
    }
    SessionResult {
        connected: peer.connected,
        error: (!peer.connected).then(|| "ICE/DTLS never connected".to_string()),
        stats: peer.stats,
        signaling_ms: Some(signaling_ms),
        served_by,
    }
}
