//! What a client asks of the tracks it receives (`track_setting`): the
//! widest picture it wants (a size, or a quality taken as the width of
//! that announced layer), and whether it wants the track at all now
//! (`disabled`: a hidden tile). A disabled track keeps its receive
//! section, so the client keeps its remote track, while the worker stops
//! forwarding it; enabling it again binds it with the next offer.

use super::*;

impl Session {
    pub(super) fn track_setting(&mut self, s: proto::UpdateTrackSettings, out: &mut Vec<Output>) {
        for track in &s.track_sids {
            if s.disabled {
                if self.slots.is_wanted(track) && self.disabled.insert(track.clone()) {
                    out.push(Output::Room(ClientMessage::Subscription {
                        track: track.clone(),
                        subscribed: Some(false),
                        max_width: None,
                    }));
                }
                continue;
            }
            if self.disabled.remove(track) {
                self.reoffer = true;
            }
            let max_width = self.max_width(track, &s);
            out.push(Output::Room(ClientMessage::Subscription {
                track: track.clone(),
                subscribed: None,
                max_width: Some(max_width),
            }));
        }
    }

    /// The widest picture a `track_setting` asks for: its size if it
    /// names one, else the width of the layer of its quality (the
    /// narrowest layer for LOW when the publisher announced no sizes).
    fn max_width(&self, track: &str, setting: &proto::UpdateTrackSettings) -> Option<u32> {
        if setting.width > 0 {
            return Some(setting.width);
        }
        let quality =
            proto::VideoQuality::try_from(setting.quality).unwrap_or(proto::VideoQuality::High);
        if quality == proto::VideoQuality::High {
            return None;
        }
        let layers = self
            .remote_track(track)
            .map(convert::layer_sizes)
            .unwrap_or_default();
        match (quality, layers.as_slice()) {
            (proto::VideoQuality::Medium, [.., medium, _]) => Some(medium.width),
            (proto::VideoQuality::Medium, _) => None,
            (_, [low, ..]) => Some(low.width),
            (_, []) => Some(1),
        }
    }
}
