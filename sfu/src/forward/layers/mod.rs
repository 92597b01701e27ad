//! Simulcast layers: what a publisher sends ([`PublishedLayers`], here) and
//! which layer each subscriber gets ([`LayerSelector`], in `selector`).
//!
//! A layer is a simulcast stream (its rid) or, in a scalable stream (VP9
//! SVC: spatial layers in one RTP stream), the stream's spatial layers up
//! to one of them ([`LayerChoice`]): forwarding spatial layer 2 means
//! forwarding 0, 1 and 2, so its bitrate is theirs together.
//!
//! Layers are ranked by what they carry (frame width from the bitstream,
//! then measured bitrate), never by their rid names, because encoders name
//! and order rids differently. A layer that stops sending drops out of the
//! ranking within [`LAYER_STALE_AFTER`].
//!
//! The selector picks a target from the subscriber's bandwidth estimate,
//! its maximum width and the layers that are flowing. It goes down at once
//! and up carefully: only after the estimate has allowed the next layer for
//! a hold time, which doubles when an upgrade had to be undone soon after
//! (so a fluctuating estimate cannot make it oscillate). When not even the
//! lowest layer fits, video pauses; it resumes with a margin.

use std::time::{Duration, Instant};

use str0m::media::Rid;

use super::codec::SpatialDims;

mod selector;
mod wish;
pub use selector::{
    loss_adjusted, selection_estimate, FrameVerdict, LayerSelector, INITIAL_ESTIMATE_BPS,
};
pub use wish::LayerWish;

/// A layer without frames for this long is treated as stopped.
pub const LAYER_STALE_AFTER: Duration = Duration::from_millis(700);
const BITRATE_WINDOW: Duration = Duration::from_millis(500);

/// Identifies a stream of a track: its rid (None for a non-simulcast track).
pub type LayerId = Option<Rid>;

/// What a subscriber can be given of a video track: one stream and, when
/// that stream is scalable, its spatial layers `0..=spatial` (0 for a
/// stream without spatial layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerChoice {
    pub rid: LayerId,
    pub spatial: u8,
}

impl From<LayerId> for LayerChoice {
    fn from(rid: LayerId) -> Self {
        LayerChoice { rid, spatial: 0 }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    id: LayerId,
    spatial: u8,
    width: u32,
    height: u32,
    last_frame: Instant,
    window_start: Instant,
    /// Bytes per temporal layer in the current window.
    window_bytes: [u64; TEMPORAL_LAYERS],
    /// Bitrate per temporal layer (not cumulative).
    tid_bps: [u64; TEMPORAL_LAYERS],
    max_tid: u8,
    /// A bitrate window closed: `tid_bps` is a measurement.
    measured: bool,
}

impl Layer {
    fn new(id: LayerId, spatial: u8, now: Instant) -> Layer {
        Layer {
            id,
            spatial,
            width: 0,
            height: 0,
            last_frame: now,
            window_start: now,
            window_bytes: [0; TEMPORAL_LAYERS],
            tid_bps: [0; TEMPORAL_LAYERS],
            max_tid: 0,
            measured: false,
        }
    }
}

/// One layer as the selector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerView {
    pub id: LayerId,
    /// Spatial layers `0..=spatial` of stream `id` (0 without SVC).
    pub spatial: u8,
    pub width: u32,
    pub height: u32,
    /// Bitrate of the whole layer (all temporal layers).
    pub bitrate_bps: u64,
    /// Bitrate when forwarding temporal layers `0..=t` only, for each `t`.
    pub temporal_bps: [u64; TEMPORAL_LAYERS],
    /// Highest temporal layer seen (0: no temporal scalability).
    pub max_tid: u8,
    /// The rates were measured (a spatial layer's: its own and those below).
    pub measured: bool,
}

impl LayerView {
    /// A layer without temporal scalability.
    pub fn new(id: LayerId, width: u32, height: u32, bitrate_bps: u64) -> LayerView {
        LayerView {
            id,
            spatial: 0,
            width,
            height,
            bitrate_bps,
            temporal_bps: [bitrate_bps; TEMPORAL_LAYERS],
            max_tid: 0,
            measured: bitrate_bps > 0,
        }
    }

    /// What a subscriber given this layer receives.
    pub fn choice(&self) -> LayerChoice {
        LayerChoice {
            rid: self.id,
            spatial: self.spatial,
        }
    }

    /// The least this layer is worth carrying with: half its frame rate
    /// (temporal layers 0 and 1). Below that a lower spatial layer at a
    /// smooth frame rate is the better picture; only the lowest layer goes
    /// down to its base temporal layer alone.
    pub(super) fn keep_bps(&self, lowest: bool) -> u64 {
        let t = if lowest { 0 } else { self.max_tid.min(1) };
        self.temporal_bps[usize::from(t)]
    }

    /// Highest temporal layer that fits `budget` (0 if none does).
    pub(super) fn temporal_fit(&self, budget: u64) -> u8 {
        (0..=self.max_tid)
            .rev()
            .find(|t| self.temporal_bps[usize::from(*t)] <= budget)
            .unwrap_or(0)
    }
}

/// Temporal layers tracked per spatial layer (VP8 uses up to 4).
pub const TEMPORAL_LAYERS: usize = 4;

/// Time after a track's first frame within which all its layers are
/// expected to have shown up (before that, no initial choice is made).
pub const LAYERS_SETTLE: Duration = Duration::from_millis(800);

/// How long a subscriber with a width limit waits, after a track's first
/// frame, for an announced layer that fits it before it takes a wider one
/// (relayed layers come up one keyframe at a time: seen taking over 1 s).
pub const FIT_WAIT: Duration = Duration::from_secs(3);

/// The layers of one published video track.
#[derive(Debug, Clone, Default)]
pub struct PublishedLayers {
    layers: Vec<Layer>,
    /// Layers announced in the SDP (`a=simulcast`); 1 without simulcast.
    expected: usize,
    first_frame: Option<Instant>,
    /// Spatial layer sizes a scalable stream announced (its scalability
    /// structure), per stream.
    spatial_dims: Vec<(LayerId, SpatialDims)>,
}

impl PublishedLayers {
    pub fn new(expected: usize) -> Self {
        PublishedLayers {
            expected: expected.max(1),
            ..Default::default()
        }
    }

    /// True once an initial layer choice is meaningful: every announced
    /// layer has been seen with its picture size, or enough time passed.
    pub fn settled(&self, now: Instant) -> bool {
        let all_known = self.none_missing()
            && (self.layers.len() == 1 || self.layers.iter().all(|l| l.width > 0));
        all_known
            || self
                .first_frame
                .is_some_and(|t| now.saturating_duration_since(t) >= LAYERS_SETTLE)
    }

    /// Whether `selector` may choose now: it already has a choice (or
    /// paused), or these layers are [`settled_for`](Self::settled_for) it.
    pub fn ready_for(&self, selector: &LayerSelector, now: Instant) -> bool {
        selector.has_chosen() || self.settled_for(now, selector.max_width)
    }

    /// [`settled`](Self::settled), and for a subscriber limited to
    /// `max_width`: a layer that fits was seen, or no announced layer is
    /// missing any more, or [`FIT_WAIT`] passed.
    pub fn settled_for(&self, now: Instant, max_width: Option<u32>) -> bool {
        let Some(max) = max_width else {
            return self.settled(now);
        };
        let fits = self.layers.iter().any(|l| l.width > 0 && l.width <= max);
        let missing = !self.none_missing();
        let waited = self
            .first_frame
            .is_some_and(|t| now.saturating_duration_since(t) >= FIT_WAIT);
        self.settled(now) && (fits || !missing || waited)
    }

    /// No announced layer is still to come: every layer the SDP and the
    /// scalability structures announced was seen, or a stream with several
    /// spatial layers announced them all. Such a stream describes itself
    /// whole: it is what a relay (from another worker or node), which asks
    /// for three simulcast streams whatever the publisher sends, gets from a
    /// scalable publisher in the first of them, and the other two never come.
    fn none_missing(&self) -> bool {
        let scalable = self
            .spatial_dims
            .iter()
            .any(|(_, dims)| dims.iter().flatten().count() > 1);
        scalable || self.layers.len() >= self.announced()
    }

    /// Layers expected: the simulcast streams announced, each scalable one
    /// counted with the spatial layers its scalability structure announced.
    fn announced(&self) -> usize {
        let extra: usize = self
            .spatial_dims
            .iter()
            .map(|(_, dims)| dims.iter().flatten().count().saturating_sub(1))
            .sum();
        self.expected.max(1) + extra
    }

    /// Spatial layers stream `id` announced (None: not a scalable stream,
    /// or no scalability structure with sizes seen yet).
    pub fn spatial_layers(&self, id: &LayerId) -> Option<u8> {
        let (_, dims) = self.spatial_dims.iter().find(|(i, _)| i == id)?;
        Some(dims.iter().flatten().count() as u8)
    }

    /// Stream `id` announced its spatial layers' sizes (a scalability
    /// structure, sent with key pictures). Layers not seen yet are taken
    /// as flowing from `now` (their packets follow in the same picture), so
    /// a subscriber's first choice can be made at the picture's first
    /// packet, and a layer that never comes goes stale as any other.
    pub fn announce_spatial(&mut self, id: LayerId, dims: SpatialDims, now: Instant) {
        match self.spatial_dims.iter_mut().find(|(i, _)| *i == id) {
            Some((_, d)) => *d = dims,
            None => self.spatial_dims.push((id, dims)),
        }
        for (spatial, size) in dims.iter().enumerate() {
            let Some((width, height)) = *size else {
                continue;
            };
            let spatial = spatial as u8;
            match self
                .layers
                .iter_mut()
                .find(|l| l.id == id && l.spatial == spatial)
            {
                Some(layer) => (layer.width, layer.height) = (width, height),
                None => {
                    let mut layer = Layer::new(id, spatial, now);
                    (layer.width, layer.height) = (width, height);
                    self.layers.push(layer);
                }
            }
        }
    }

    /// A packet of layer `id` (spatial layer `spatial` in it) arrived
    /// (`size` bytes; `dims` when the frame tells).
    pub fn observe(
        &mut self,
        id: LayerId,
        spatial: u8,
        size: usize,
        dims: Option<(u32, u32)>,
        tid: u8,
        now: Instant,
    ) {
        let tid = usize::from(tid).min(TEMPORAL_LAYERS - 1);
        self.first_frame.get_or_insert(now);
        let index = match self
            .layers
            .iter()
            .position(|l| l.id == id && l.spatial == spatial)
        {
            Some(i) => i,
            None => {
                self.layers.push(Layer::new(id, spatial, now));
                self.layers.len() - 1
            }
        };
        let layer = &mut self.layers[index];
        layer.last_frame = now;
        layer.window_bytes[tid] += size as u64;
        layer.max_tid = layer.max_tid.max(tid as u8);
        let elapsed = now.saturating_duration_since(layer.window_start);
        if elapsed >= BITRATE_WINDOW {
            let micros = elapsed.as_micros().max(1) as u64;
            for t in 0..TEMPORAL_LAYERS {
                layer.tid_bps[t] = layer.window_bytes[t] * 8 * 1_000_000 / micros;
            }
            layer.window_bytes = [0; TEMPORAL_LAYERS];
            layer.window_start = now;
            layer.measured = true;
        }
        if let Some((w, h)) = dims {
            layer.width = w;
            layer.height = h;
        }
    }

    /// Every layer seen so far with its last known width (also layers that
    /// stopped), and whether all announced layers were seen.
    pub fn known(&self) -> (Vec<(LayerId, u32)>, bool) {
        let known = self
            .layers
            .iter()
            .filter(|l| l.spatial == 0)
            .map(|l| (l.id, self.stream_width(&l.id)))
            .collect();
        let streams = self.layers.iter().filter(|l| l.spatial == 0).count();
        (known, streams >= self.expected)
    }

    /// The widest picture a stream carries (its top spatial layer's).
    fn stream_width(&self, id: &LayerId) -> u32 {
        self.layers
            .iter()
            .filter(|l| l.id == *id)
            .map(|l| l.width)
            .max()
            .unwrap_or(0)
    }

    /// Flowing layers, lowest first (by width, then bitrate). A spatial
    /// layer of a scalable stream carries the rates of the layers below it.
    pub fn ranked(&self, now: Instant) -> Vec<LayerView> {
        let flowing = |l: &&Layer| now.saturating_duration_since(l.last_frame) < LAYER_STALE_AFTER;
        let mut v: Vec<LayerView> = self
            .layers
            .iter()
            .filter(flowing)
            .map(|l| {
                let mut temporal_bps = [0; TEMPORAL_LAYERS];
                let mut max_tid = 0;
                let mut measured = true;
                let below = self
                    .layers
                    .iter()
                    .filter(|b| b.id == l.id && b.spatial <= l.spatial);
                for b in below {
                    let mut sum = 0;
                    for (t, bps) in b.tid_bps.iter().enumerate() {
                        sum += bps;
                        temporal_bps[t] += sum;
                    }
                    max_tid = max_tid.max(b.max_tid);
                    measured &= b.measured;
                }
                LayerView {
                    id: l.id,
                    spatial: l.spatial,
                    width: l.width,
                    height: l.height,
                    bitrate_bps: temporal_bps[TEMPORAL_LAYERS - 1],
                    temporal_bps,
                    max_tid,
                    measured,
                }
            })
            .collect();
        v.sort_by_key(|l| (l.width, l.bitrate_bps));
        v
    }
}

#[cfg(test)]
mod tests;
