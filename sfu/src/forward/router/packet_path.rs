//! The router's packet path: who receives one packet of a track now. Video
//! down-tracks get their selected layer only and switch at the first
//! packet of the target's keyframe; a relay's down-track takes every layer
//! it wants, each on its own stream; a packet dropped on purpose in the
//! current layer goes out as a skip, so the stream rewriter squeezes it
//! out of the subscriber's sequence.
//!
//! A scalable stream (VP9 SVC) reaches each down-track up to its chosen
//! spatial layer: the packets of the layers above are skips, and the last
//! packet of the chosen layer's frame is marked as the end of the picture
//! (the RTP marker the publisher put on the top layer's last packet). A
//! packet whose spatial layer lies beyond what the stream's scalability
//! structure announced is dropped for everyone and counted.

use super::*;

/// One packet as the router needs to know it.
#[derive(Debug, Clone, Default)]
pub struct PacketInfo {
    /// Simulcast layer (rid) of the packet; None without simulcast.
    pub layer: LayerId,
    /// Extended sequence number in its layer's stream.
    pub seq: u64,
    /// The first packet of a keyframe.
    pub starts_keyframe: bool,
    /// The first packet of a frame.
    pub starts_frame: bool,
    /// Payload bytes (0: padding only).
    pub size: usize,
    /// Picture size when the packet tells (keyframes).
    pub dims: Option<(u32, u32)>,
    /// Temporal layer (0 without temporal scalability).
    pub temporal: u8,
    /// Temporal switching point: higher layers may start at this frame.
    pub sync: bool,
    /// Spatial layer in a scalable stream (0 otherwise).
    pub spatial: u8,
    /// Last packet of its (spatial layer's) frame, where a subscriber
    /// receiving no higher spatial layer has its picture end.
    pub ends_frame: bool,
    /// The spatial layers' sizes, when the packet announces them.
    pub spatial_dims: Option<SpatialDims>,
}

impl PacketInfo {
    /// An audio packet, or a video packet without simulcast.
    pub fn simple(seq: u64, starts_keyframe: bool) -> PacketInfo {
        PacketInfo {
            seq,
            starts_keyframe,
            starts_frame: starts_keyframe,
            size: 100,
            ..Default::default()
        }
    }
}

/// One down-track's share of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub down: DownTrackKey,
    /// The stream of a relay's line it goes on (None: the line's only one).
    pub slot: Option<usize>,
    /// Write it (false: a packet of the flowing layer dropped on purpose,
    /// for the stream's sequence to skip).
    pub send: bool,
    /// The stream starts over here (a layer switch, a stream reopened): its
    /// numbering continues from what was sent, whatever came before.
    pub fresh: bool,
    /// Set the RTP marker: the subscriber's picture ends with this packet
    /// (the packet's own marker is kept in any case).
    pub ends_picture: bool,
    /// The highest spatial and temporal layers the subscriber receives of
    /// the packet's stream (None: all of them, as a relay).
    pub layers: Option<(u8, u8)>,
}

impl Delivery {
    fn send(down: DownTrackKey, slot: Option<usize>, fresh: bool) -> Delivery {
        Delivery {
            down,
            slot,
            send: true,
            fresh,
            ends_picture: false,
            layers: None,
        }
    }

    fn skip(down: DownTrackKey) -> Delivery {
        Delivery {
            send: false,
            ..Delivery::send(down, None, false)
        }
    }
}

impl Router {
    /// Who receives this packet of `track` now, in `deliveries`. Video
    /// down-tracks get packets of their selected layer only and switch
    /// layers at the first packet of a keyframe. Returns a keyframe request
    /// when one is needed (throttled per layer).
    pub fn route_packet(
        &mut self,
        track: TrackKey,
        packet: &PacketInfo,
        now: Instant,
        deliveries: &mut Vec<Delivery>,
    ) -> Option<RouterAction> {
        deliveries.clear();
        let t = self.tracks.get_mut(&track)?;
        if t.kind == MediaKind::Audio {
            deliveries.extend(
                t.down_tracks
                    .iter()
                    .map(|d| Delivery::send(*d, None, false)),
            );
            return None;
        }
        let layer = packet.layer;
        if let Some(dims) = packet.spatial_dims {
            t.layers.announce_spatial(layer, dims, now);
        }
        let lying = t
            .layers
            .spatial_layers(&layer)
            .is_some_and(|n| packet.spatial >= n.max(1));
        if lying {
            self.lying_descriptors += 1;
        }
        if packet.size > 0 && !lying {
            let spatial = packet.spatial;
            t.layers.observe(
                layer,
                spatial,
                packet.size,
                packet.dims,
                packet.temporal,
                now,
            );
        }
        if packet.starts_keyframe {
            t.keyframes.entry(layer).or_default().keyframe_received();
        }
        let mut want: Option<(LayerId, KeyframeCause)> = None;
        match t
            .gaps
            .entry(layer)
            .or_default()
            .on_packet(packet.seq, packet.starts_keyframe, now)
        {
            GapVerdict::Fine => {}
            GapVerdict::Unrepaired => want = Some((layer, KeyframeCause::PublisherGap)),
            GapVerdict::Jump => {
                self.sequence_jumps += 1;
                if !packet.starts_keyframe {
                    want = Some((layer, KeyframeCause::PublisherGap));
                }
            }
        }
        let mut ranked: Option<Vec<LayerView>> = None;
        for down in &t.down_tracks {
            let Some(dt) = self.down_tracks.get_mut(down).filter(|d| d.ready) else {
                continue;
            };
            if let Some(gate) = dt.relay.as_mut() {
                match gate.on_packet(&layer, packet.starts_keyframe) {
                    RelayVerdict::Forward { slot, opened } => {
                        deliveries.push(Delivery::send(*down, Some(slot), opened));
                    }
                    RelayVerdict::DropNeedKeyframe => {
                        want.get_or_insert((layer, KeyframeCause::NewSubscriber));
                    }
                    RelayVerdict::Drop => {}
                }
                continue;
            }
            if !t.layers.ready_for(&dt.selector, now) {
                continue; // wait until the layers showed up before choosing
            }
            if !dt.selector.has_chosen() {
                // First packets for this down-track: choose a layer now, from
                // its share of the subscriber's (initial) estimate.
                let layers = ranked.get_or_insert_with(|| t.layers.ranked(now));
                let share = share_of(&self.estimates, &self.video_shares, down.subscriber);
                dt.selector.update(now, layers, Some(share));
            }
            let flowing = dt.selector.current().is_some_and(|c| c.rid == layer);
            if lying {
                if flowing {
                    deliveries.push(Delivery::skip(*down));
                }
                continue;
            }
            let verdict = dt.selector.on_packet(
                &layer,
                packet.spatial,
                packet.starts_keyframe,
                packet.starts_frame && packet.spatial == 0,
                packet.temporal,
                packet.sync,
            );
            let fresh = match verdict {
                FrameVerdict::Drop | FrameVerdict::DropNeedKeyframe => {
                    if verdict == FrameVerdict::DropNeedKeyframe {
                        want.get_or_insert((layer, KeyframeCause::NewSubscriber));
                    }
                    if flowing {
                        deliveries.push(Delivery::skip(*down));
                    }
                    continue;
                }
                FrameVerdict::SwitchTo => true,
                FrameVerdict::Forward => false,
            };
            let ends_picture = packet.ends_frame
                && dt
                    .selector
                    .current()
                    .is_some_and(|c| c.spatial == packet.spatial);
            let layers = dt
                .selector
                .current()
                .map(|c| (c.spatial, dt.selector.current_temporal()));
            deliveries.push(Delivery {
                ends_picture,
                layers,
                ..Delivery::send(*down, None, fresh)
            });
        }
        let (layer, cause) = want?;
        t.request_keyframe(track, layer, cause, now)
    }
}
