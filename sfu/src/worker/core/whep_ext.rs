//! The WHEP core extensions in the worker: a viewer's event streams
//! (registered, attached to, closed), what they are told (activity as a
//! publisher's media starts and stops; every half second, when changed, the
//! layers its video can be given and the room's viewer count, the layers at
//! least every [`LAYERS_REFRESH`] for their bitrates; `reconnect` once
//! when the server drains), and the layer extension's wishes applied to the
//! viewer's layer selection.

use super::*;
use crate::forward::layers::{LayerView, LayerWish};
use crate::room::offer::media_sections;
use crate::room::session_events::MAX_EVENT_STREAMS;
use signaling::backend::{EventKinds, LayerSelection, SessionEvents};
use signaling::whep_ext::LayerInfo;
use str0m::media::{MediaKind, Rid};

/// A `layers` event whose layers did not change is sent again this often
/// (their bitrates move).
const LAYERS_REFRESH: Duration = Duration::from_secs(5);

fn too_many_streams() -> BackendError {
    BackendError::OverCapacity {
        what: format!("event streams per session ({MAX_EVENT_STREAMS})"),
        retry_after: Duration::from_secs(5),
    }
}

/// A `layers` event's entries for one video line: highest first, one per
/// stream, spatial and temporal layer.
fn layer_infos(available: &[LayerView]) -> Vec<LayerInfo> {
    let mut out = vec![];
    for l in available.iter().rev() {
        for t in (0..=l.max_tid).rev() {
            out.push(LayerInfo {
                rid: l.id.as_ref().map(|r| r.to_string()),
                spatial_layer_id: l.spatial,
                temporal_layer_id: t,
                bitrate: l.temporal_bps[usize::from(t).min(l.temporal_bps.len() - 1)],
                width: l.width,
                height: l.height,
            });
        }
    }
    out
}

/// The same layers, bitrates aside (whether a `layers` event says news).
fn same_layers(a: &SessionEvent, b: &SessionEvent) -> bool {
    let shape = |e: &SessionEvent| match e {
        SessionEvent::Layers(medias) => medias
            .iter()
            .map(|(i, ls)| {
                let ids: Vec<_> = ls
                    .iter()
                    .map(|l| {
                        (
                            l.rid.clone(),
                            l.spatial_layer_id,
                            l.temporal_layer_id,
                            l.width,
                            l.height,
                        )
                    })
                    .collect();
                (*i, ids)
            })
            .collect::<Vec<_>>(),
        _ => vec![],
    };
    shape(a) == shape(b)
}

impl WorkerCore {
    pub(super) fn open_events(
        &mut self,
        resource_id: &str,
        kinds: EventKinds,
    ) -> Result<String, BackendError> {
        let p = self.session_mut(resource_id)?;
        p.events.register(kinds).ok_or_else(too_many_streams)
    }

    /// Attach to registered stream `stream` of a session (None: its
    /// activity alone); the current state first.
    pub(super) fn attach_events(
        &mut self,
        resource_id: &str,
        stream: Option<&str>,
    ) -> Result<SessionEvents, BackendError> {
        let id = self.session_id(resource_id)?;
        let current = self.activity(id);
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(BackendError::NotFound)?;
        match p.events.attach(stream, current) {
            Ok(Some(rx)) => Ok(rx),
            Ok(None) => Err(too_many_streams()),
            Err(()) => Err(BackendError::NotFound),
        }
    }

    pub(super) fn close_events(
        &mut self,
        resource_id: &str,
        stream: &str,
    ) -> Result<(), BackendError> {
        let p = self.session_mut(resource_id)?;
        if p.events.close(stream) {
            Ok(())
        } else {
            Err(BackendError::NotFound)
        }
    }

    /// A down-track of `subscriber` gained or lost its source.
    pub(super) fn notify_activity(&mut self, subscriber: ParticipantId) {
        let event = self.activity(subscriber);
        if let Some(p) = self.participants.get_mut(&subscriber) {
            p.events.notify(event);
        }
    }

    /// Tell WHEP viewers' event streams about layers, the viewer count and
    /// a drain (called with the housekeeping, every half second).
    pub(super) fn publish_session_events(&mut self, now: Instant) {
        let draining = self.ctx.registry.is_draining();
        let mut viewers: HashMap<Arc<str>, usize> = HashMap::new();
        for p in self.participants.values() {
            if p.kind == SessionKind::Whep && p.leg_of.is_none() {
                *viewers.entry(p.room.clone()).or_default() += 1;
            }
        }
        for p in self.participants.values_mut() {
            if p.kind != SessionKind::Whep {
                continue;
            }
            let count = SessionEvent::ViewerCount(viewers.get(&p.room).copied().unwrap_or(0));
            if p.events.wants(&count) {
                p.events.notify(count);
            }
            if draining {
                p.events.notify(SessionEvent::Reconnect);
            }
            let probe = SessionEvent::Layers(vec![]);
            let (Some(room), true) = (self.rooms.get(&p.room), p.events.wants(&probe)) else {
                continue;
            };
            let sections = media_sections(&p.negotiation.remote_offer);
            let medias: Vec<(usize, Vec<LayerInfo>)> = room
                .router
                .subscription_views(p.id, now)
                .into_iter()
                .filter(|v| v.kind == MediaKind::Video && !v.available.is_empty())
                .filter_map(|v| {
                    let index = sections
                        .iter()
                        .position(|s| s.mid.as_deref() == Some(v.mid.to_string().as_str()))?;
                    Some((index, layer_infos(&v.available)))
                })
                .collect();
            let event = SessionEvent::Layers(medias);
            let stale = p
                .events
                .layers_sent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= LAYERS_REFRESH);
            let changed = p
                .events
                .last_of(&event)
                .is_none_or(|last| !same_layers(last, &event));
            if changed || stale {
                p.events.layers_sent_at = Some(now);
                p.events.notify(event);
            }
        }
    }

    /// A WHEP player's layer wish: applied to the video line it names (the
    /// first video line by default). A stream or spatial layer the
    /// publisher does not send is refused (422) rather than held.
    pub(super) fn select_layer(
        &mut self,
        resource_id: &str,
        selection: LayerSelection,
        now: Instant,
    ) -> Result<(), BackendError> {
        let id = self.session_id(resource_id)?;
        let p = self.participants.get(&id).ok_or(BackendError::NotFound)?;
        let room = self.rooms.get_mut(&p.room).ok_or(BackendError::NotFound)?;
        let sections = media_sections(&p.negotiation.remote_offer);
        let videos: Vec<(usize, String)> = sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == "video")
            .filter_map(|(i, s)| Some((i, s.mid.clone()?)))
            .collect();
        let line = match &selection.media_id {
            None => videos.first(),
            Some(m) => videos.iter().find(|(i, _)| i.to_string() == *m),
        };
        let Some((_, mid)) = line else {
            return Err(BackendError::Unprocessable(match &selection.media_id {
                Some(m) => format!("mediaId {m} is not a video m-line of this session"),
                None => "this session receives no video".to_string(),
            }));
        };
        let down = crate::forward::router::DownTrackKey {
            subscriber: id,
            mid: str0m::media::Mid::from(mid.as_str()),
        };
        let available: Vec<LayerView> = room
            .router
            .subscription_views(id, now)
            .into_iter()
            .find(|v| v.mid == down.mid)
            .map(|v| v.available)
            .unwrap_or_default();
        if let Some(rid) = &selection.rid {
            let wanted = Some(Rid::from(rid.as_str()));
            if !available.is_empty() && !available.iter().any(|l| l.id == wanted) {
                let sent: Vec<String> = available
                    .iter()
                    .filter_map(|l| l.id.as_ref().map(|r| r.to_string()))
                    .collect();
                return Err(BackendError::Unprocessable(format!(
                    "the publisher sends no layer with rid {rid:?} (it sends: {})",
                    if sent.is_empty() {
                        "one layer without rid".to_string()
                    } else {
                        sent.join(", ")
                    }
                )));
            }
        }
        if let Some(s) = selection.spatial_layer_id {
            let top = available.iter().map(|l| l.spatial).max();
            if top.is_some_and(|top| s > top) {
                return Err(BackendError::Unprocessable(format!(
                    "the publisher sends spatial layers 0..={} (asked for {s})",
                    top.unwrap_or(0)
                )));
            }
        }
        let wish = LayerWish {
            rid: selection.rid.as_deref().map(Rid::from),
            spatial: selection.spatial_layer_id,
            temporal: selection.temporal_layer_id,
            max_spatial: selection.max_spatial_layer_id,
            max_temporal: selection.max_temporal_layer_id,
            max_width: selection.max_width,
            max_height: selection.max_height,
        };
        room.router.set_layer_wish(down, wish);
        Ok(())
    }
}
