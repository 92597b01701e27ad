//! LiveKit sessions by participant sid, so that a client whose signal
//! connection dropped resumes its session on a new one (`reconnect` with
//! its sid in the join request). A session is shared between the socket
//! tasks that serve it (the old one may not have noticed its end yet) and
//! locked only while it translates one message, never across an await.
//! Sessions whose socket went away are kept for [`KEEP_DETACHED`], then
//! dropped (the worker has removed the participant by then).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::session::Session;

/// How long a session without a socket can be resumed (longer than the
/// worker's reconnect grace, which decides whether the participant stays).
pub const KEEP_DETACHED: Duration = Duration::from_secs(60);
/// Most sessions kept (attached or not); the oldest detached go first.
pub const MAX_SESSIONS: usize = 100_000;

pub type SharedSession = Arc<Mutex<Session>>;

struct Entry {
    identity: String,
    session: SharedSession,
    detached_at: Option<Instant>,
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    /// A new session of participant `sid`.
    pub fn insert(&self, sid: &str, identity: &str, session: SharedSession, now: Instant) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        sessions.retain(|_, e| {
            e.detached_at
                .is_none_or(|at| now.duration_since(at) < KEEP_DETACHED)
        });
        if sessions.len() >= MAX_SESSIONS {
            return;
        }
        sessions.insert(
            sid.to_string(),
            Entry {
                identity: identity.to_string(),
                session,
                detached_at: None,
            },
        );
    }

    /// The session of `sid` for a client resuming as `identity` (the
    /// identity its token proves must be the session's).
    pub fn resume(&self, sid: &str, identity: &str) -> Option<SharedSession> {
        let mut sessions = self.sessions.lock().ok()?;
        let entry = sessions.get_mut(sid).filter(|e| e.identity == identity)?;
        entry.detached_at = None;
        Some(entry.session.clone())
    }

    /// A socket of `sid` closed: keep the session for a resume unless it
    /// ended, or another socket serves it now.
    pub fn detach(&self, sid: &str, session: &SharedSession, now: Instant) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        let ended = session.lock().map_or(true, |s| s.ended());
        let Some(entry) = sessions.get_mut(sid) else {
            return;
        };
        if !Arc::ptr_eq(&entry.session, session) {
            return;
        }
        if ended {
            sessions.remove(sid);
        } else if Arc::strong_count(session) <= 2 {
            // Only the registry and this closing task hold it.
            entry.detached_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::session::Joining;
    use super::*;

    fn session() -> SharedSession {
        Arc::new(Mutex::new(Session::new(Joining {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            auto_subscribe: true,
            offer: None,
            dual: false,
        })))
    }

    #[test]
    fn a_detached_session_resumes_for_its_identity_only_and_not_after_long() {
        let registry = Registry::default();
        let now = Instant::now();
        let s = session();
        registry.insert("PA_1", "ann", s.clone(), now);
        assert!(registry.resume("PA_1", "mallory").is_none());
        registry.detach("PA_1", &s, now);
        let again = registry.resume("PA_1", "ann").expect("resumes");
        assert!(Arc::ptr_eq(&again, &s));
        drop(again);
        registry.detach("PA_1", &s, now);
        // Long detached: gone at the next insert.
        registry.insert("PA_2", "ben", session(), now + KEEP_DETACHED * 2);
        assert!(registry.resume("PA_1", "ann").is_none());
        assert!(registry.resume("PA_2", "ben").is_some());
    }
}
