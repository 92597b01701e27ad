//! The WHEP core extensions' data: server-sent events (the event types, what
//! each carries, which ones a stream asked for) and video layer selection
//! (what a player may ask for). The HTTP side is `whep_events`; the media
//! server produces the events and applies the selections.
//!
//! Event types (`urn:ietf:params:whep:ext:core:server-sent-events`):
//! `active` / `inactive` (a publisher's media flows to the viewer, or
//! stopped), `layers` (the video layers the viewer can be given, per m-line
//! index of its SDP: rid, spatial and temporal layer ids, bitrate, size),
//! `viewercount` (WHEP viewers of the room) and `reconnect` (the server is
//! going away: play again). Each event's data is one line of JSON.

use serde::{Deserialize, Serialize};

/// What a WHEP viewer is told about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A publisher's media flows to this viewer.
    Active,
    /// The publisher's tracks ended; the viewer waits for the next publisher.
    Inactive,
    /// The video layers the viewer can be given: per m-line index of its
    /// SDP, highest first.
    Layers(Vec<(usize, Vec<LayerInfo>)>),
    /// WHEP viewers of the room.
    ViewerCount(usize),
    /// The server is going away: start playing again (the same endpoint).
    Reconnect,
}

/// Event type names, in the order [`EventKinds`] numbers them.
pub const EVENT_NAMES: [&str; 5] = ["active", "inactive", "layers", "reconnect", "viewercount"];

impl SessionEvent {
    pub fn name(&self) -> &'static str {
        EVENT_NAMES[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            SessionEvent::Active => 0,
            SessionEvent::Inactive => 1,
            SessionEvent::Layers(_) => 2,
            SessionEvent::Reconnect => 3,
            SessionEvent::ViewerCount(_) => 4,
        }
    }

    /// The event's data: one line of JSON.
    pub fn data(&self) -> String {
        match self {
            SessionEvent::Active | SessionEvent::Inactive | SessionEvent::Reconnect => {
                "{}".to_string()
            }
            SessionEvent::ViewerCount(n) => serde_json::json!({ "viewercount": n }).to_string(),
            SessionEvent::Layers(medias) => {
                // Written in place (a JSON map would reorder the fields).
                let entries: Vec<String> = medias
                    .iter()
                    .map(|(index, layers)| {
                        let list = serde_json::to_string(layers).unwrap_or_else(|_| "[]".into());
                        format!("\"{index}\":{list}")
                    })
                    .collect();
                format!("{{{}}}", entries.join(","))
            }
        }
    }
}

/// One layer of a `layers` event: a simulcast encoding (rid), a spatial
/// layer and a temporal layer, with what it carries (the bitrate of it and
/// the layers it is decoded from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rid: Option<String>,
    pub spatial_layer_id: u8,
    pub temporal_layer_id: u8,
    pub bitrate: u64,
    pub width: u32,
    pub height: u32,
}

/// A set of event types: what one event stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventKinds(u8);

impl EventKinds {
    /// `active` and `inactive`.
    pub const ACTIVITY: EventKinds = EventKinds(0b11);
    pub const ALL: EventKinds = EventKinds(0b1_1111);

    /// The kinds named in `names` (an empty list: all of them); an unknown
    /// name is returned as the error.
    pub fn parse(names: &[String]) -> Result<EventKinds, String> {
        if names.is_empty() {
            return Ok(EventKinds::ALL);
        }
        let mut bits = 0;
        for name in names {
            let i = EVENT_NAMES
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| name.clone())?;
            bits |= 1 << i;
        }
        Ok(EventKinds(bits))
    }

    pub fn contains(self, event: &SessionEvent) -> bool {
        self.0 & (1 << event.index()) != 0
    }
}

/// A player's wish for the video layer it receives (the layer extension,
/// `urn:ietf:params:whep:ext:core:layer`). Every field absent: automatic
/// choice, the server's own. Held until the next selection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerSelection {
    /// The m-line index the selection applies to (default: the first video).
    #[serde(default)]
    pub media_id: Option<String>,
    /// This simulcast encoding only.
    #[serde(default)]
    pub rid: Option<String>,
    /// Exactly this spatial / temporal layer.
    #[serde(default)]
    pub spatial_layer_id: Option<u8>,
    #[serde(default)]
    pub temporal_layer_id: Option<u8>,
    /// At most these.
    #[serde(default)]
    pub max_spatial_layer_id: Option<u8>,
    #[serde(default)]
    pub max_temporal_layer_id: Option<u8>,
    #[serde(default)]
    pub max_width: Option<u32>,
    #[serde(default)]
    pub max_height: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_is_one_line_of_json() {
        assert_eq!(SessionEvent::Active.data(), "{}");
        assert_eq!(SessionEvent::ViewerCount(3).data(), r#"{"viewercount":3}"#);
        let layers = SessionEvent::Layers(vec![(
            1,
            vec![LayerInfo {
                rid: None,
                spatial_layer_id: 1,
                temporal_layer_id: 2,
                bitrate: 500_000,
                width: 640,
                height: 360,
            }],
        )]);
        assert_eq!(
            layers.data(),
            r#"{"1":[{"spatialLayerId":1,"temporalLayerId":2,"bitrate":500000,"width":640,"height":360}]}"#
        );
        assert_eq!(layers.name(), "layers");
    }

    #[test]
    fn event_kinds_from_names() {
        let kinds = EventKinds::parse(&["layers".into(), "active".into()]).expect("known");
        assert!(kinds.contains(&SessionEvent::Active));
        assert!(kinds.contains(&SessionEvent::Layers(vec![])));
        assert!(!kinds.contains(&SessionEvent::Inactive));
        assert_eq!(EventKinds::parse(&[]), Ok(EventKinds::ALL));
        assert_eq!(
            EventKinds::parse(&["scte35".into()]),
            Err("scte35".to_string())
        );
    }

    #[test]
    fn layer_selection_json() {
        let s: LayerSelection =
            serde_json::from_str(r#"{"mediaId":"1","rid":"h","maxTemporalLayerId":1}"#)
                .expect("parses");
        assert_eq!(s.rid.as_deref(), Some("h"));
        assert_eq!(s.max_temporal_layer_id, Some(1));
        assert_eq!(
            serde_json::from_str::<LayerSelection>("{}").expect("empty"),
            LayerSelection::default()
        );
        assert!(serde_json::from_str::<LayerSelection>(r#"{"spatialLayerId":-1}"#).is_err());
        assert!(serde_json::from_str::<LayerSelection>(r#"{"bogus":1}"#).is_err());
    }
}
