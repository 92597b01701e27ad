//! The event streams of one session (WHEP server-sent events): streams a
//! player registered (each with the event kinds it asked for), the
//! subscribers attached to them, and the last event of each kind, so a
//! subscriber starts with the current state and unchanged state is not
//! sent twice. Owned by the session's participant; everything goes when
//! the session does.

use std::time::Instant;

use signaling::backend::{EventKinds, SessionEvent};
use tokio::sync::mpsc;

/// Most registered streams, and most attached subscribers, per session.
pub const MAX_EVENT_STREAMS: usize = 4;

/// Queued events per subscriber: a slow reader misses events rather than
/// holding the worker.
const QUEUE: usize = 16;

struct Subscriber {
    /// The registered stream it reads (None: an internal subscriber).
    stream: Option<String>,
    kinds: EventKinds,
    tx: mpsc::Sender<SessionEvent>,
}

#[derive(Default)]
pub struct EventStreams {
    registered: Vec<(String, EventKinds)>,
    subscribers: Vec<Subscriber>,
    /// The last event sent of each kind.
    last: Vec<SessionEvent>,
    /// When the last `layers` event went out.
    pub layers_sent_at: Option<Instant>,
}

impl std::fmt::Debug for EventStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStreams")
            .field("registered", &self.registered)
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl EventStreams {
    /// Register a stream of `kinds`; its id (None: too many already).
    pub fn register(&mut self, kinds: EventKinds) -> Option<String> {
        if self.registered.len() >= MAX_EVENT_STREAMS {
            return None;
        }
        let id = format!("{:016x}", rand::random::<u64>());
        self.registered.push((id.clone(), kinds));
        Some(id)
    }

    /// Close registered stream `id` (its subscribers' streams end); false
    /// when there is none.
    pub fn close(&mut self, id: &str) -> bool {
        let before = self.registered.len();
        self.registered.retain(|(s, _)| s != id);
        self.subscribers.retain(|s| s.stream.as_deref() != Some(id));
        self.registered.len() < before
    }

    /// Attach to registered stream `stream` (None: the session's activity
    /// only, for this node's relays). It first receives `activity` and the
    /// last event of each other kind it carries. `Ok(None)`: too many
    /// subscribers; `Err(())`: no such stream.
    #[allow(clippy::result_unit_err)]
    pub fn attach(
        &mut self,
        stream: Option<&str>,
        activity: SessionEvent,
    ) -> Result<Option<mpsc::Receiver<SessionEvent>>, ()> {
        let kinds = match stream {
            Some(id) => {
                let (_, kinds) = self.registered.iter().find(|(s, _)| s == id).ok_or(())?;
                *kinds
            }
            None => EventKinds::ACTIVITY,
        };
        self.subscribers.retain(|s| !s.tx.is_closed());
        if self.subscribers.len() >= MAX_EVENT_STREAMS {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        self.remember(&activity);
        let current = std::iter::once(&activity).chain(
            self.last
                .iter()
                .filter(|e| !matches!(e, SessionEvent::Active | SessionEvent::Inactive)),
        );
        for event in current.filter(|e| kinds.contains(e)) {
            let _ = tx.try_send(event.clone());
        }
        self.subscribers.push(Subscriber {
            stream: stream.map(str::to_string),
            kinds,
            tx,
        });
        Ok(Some(rx))
    }

    /// The last event sent of `event`'s kind.
    pub fn last_of(&self, event: &SessionEvent) -> Option<&SessionEvent> {
        self.last.iter().find(|e| e.name() == event.name())
    }

    /// Some subscriber would receive events of `event`'s kind.
    pub fn wants(&self, event: &SessionEvent) -> bool {
        self.subscribers
            .iter()
            .any(|s| s.kinds.contains(event) && !s.tx.is_closed())
    }

    /// Send `event` to the subscribers that carry its kind, unless it is
    /// the last event of its kind already.
    pub fn notify(&mut self, event: SessionEvent) {
        if self.last.contains(&event) {
            return;
        }
        self.remember(&event);
        self.subscribers.retain(|s| !s.tx.is_closed());
        for s in self.subscribers.iter().filter(|s| s.kinds.contains(&event)) {
            let _ = s.tx.try_send(event.clone());
        }
    }

    /// Keep `event` as the last of its kind (`active` and `inactive` are one
    /// kind of state).
    fn remember(&mut self, event: &SessionEvent) {
        let activity =
            |e: &SessionEvent| matches!(e, SessionEvent::Active | SessionEvent::Inactive);
        self.last
            .retain(|e| e.name() != event.name() && !(activity(e) && activity(event)));
        self.last.push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<SessionEvent>) -> Vec<SessionEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn a_stream_gets_the_current_state_then_changes_of_its_kinds() {
        let mut e = EventStreams::default();
        e.notify(SessionEvent::ViewerCount(2));
        let all = e.register(EventKinds::ALL).expect("registered");
        let activity_only = e
            .register(EventKinds::parse(&["active".into(), "inactive".into()]).expect("known"))
            .expect("registered");
        let mut a = e
            .attach(Some(&all), SessionEvent::Active)
            .expect("stream")
            .expect("room");
        let mut b = e
            .attach(Some(&activity_only), SessionEvent::Active)
            .expect("stream")
            .expect("room");
        assert_eq!(
            drain(&mut a),
            vec![SessionEvent::Active, SessionEvent::ViewerCount(2)]
        );
        assert_eq!(drain(&mut b), vec![SessionEvent::Active]);
        e.notify(SessionEvent::ViewerCount(2)); // unchanged: not sent
        e.notify(SessionEvent::ViewerCount(3));
        e.notify(SessionEvent::Inactive);
        assert_eq!(
            drain(&mut a),
            vec![SessionEvent::ViewerCount(3), SessionEvent::Inactive]
        );
        assert_eq!(drain(&mut b), vec![SessionEvent::Inactive]);
        // Closed: its subscriber's stream ends, and it cannot be attached to.
        assert!(e.close(&all));
        assert!(!e.close(&all));
        assert!(a.try_recv().is_err());
        assert!(e.attach(Some(&all), SessionEvent::Active).is_err());
    }

    #[test]
    fn streams_and_subscribers_are_bounded() {
        let mut e = EventStreams::default();
        let ids: Vec<String> = (0..MAX_EVENT_STREAMS)
            .map(|_| e.register(EventKinds::ALL).expect("room"))
            .collect();
        assert!(e.register(EventKinds::ALL).is_none());
        let _kept: Vec<_> = (0..MAX_EVENT_STREAMS)
            .map(|i| {
                e.attach(Some(&ids[i]), SessionEvent::Active)
                    .expect("stream")
            })
            .collect();
        assert!(matches!(e.attach(None, SessionEvent::Active), Ok(None)));
    }
}
