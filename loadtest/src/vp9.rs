//! VP9 over RTP (RFC 9628) for the generator, sans-IO: a publisher's
//! scalability mode (`--svc L3T3`: spatial and temporal layers in one RTP
//! stream, as Chromium's `L3T3_KEY`), the payload descriptor it writes in
//! non-flexible mode, and what a receiver reads back from a descriptor.
//!
//! A publisher writes on every packet: I with a 15-bit picture id (the same
//! for every spatial layer of a picture), P on pictures that are not key
//! pictures, L with TID, U, SID and D (D=1 on the spatial layers above 0 of
//! a key picture only: they predict from the layer below there, and only
//! there, as in `L3T3_KEY`) and TL0PICIDX; B on the first packet of a layer
//! frame, E on its last. The first packet of a key picture's spatial layer 0
//! carries the scalability structure (V): every spatial layer's size (Y=1)
//! and, with temporal layers, the picture group (G=1). Temporal layers go
//! 0, 2, 1, 2 (three) or 0, 1 (two), restarting at each key picture.

use std::fmt;
use std::str::FromStr;

/// Descriptor flags (RFC 9628 4.2), first byte.
const I: u8 = 0x80;
const P: u8 = 0x40;
const L: u8 = 0x20;
const F: u8 = 0x10;
const B: u8 = 0x08;
const E: u8 = 0x04;
const V: u8 = 0x02;

/// Most spatial or temporal layers the generator sends.
pub const MAX_LAYERS: u8 = 3;

/// A scalability mode `LxTy`: x spatial layers (1-3) and y temporal layers
/// (1-3) in one stream. Spatial layers above 0 depend on the layer below on
/// key pictures only (`_KEY`; the suffix may be given or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcMode {
    pub spatial: u8,
    pub temporal: u8,
}

impl FromStr for SvcMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SvcMode, String> {
        let upper = s.to_ascii_uppercase();
        let core = upper.strip_suffix("_KEY").unwrap_or(&upper);
        let bad = || format!("{s}: expected LxTy with x and y from 1 to 3 (e.g. L3T3)");
        let (l, t) = core
            .strip_prefix('L')
            .and_then(|rest| rest.split_once('T'))
            .ok_or_else(bad)?;
        let spatial: u8 = l.parse().map_err(|_| bad())?;
        let temporal: u8 = t.parse().map_err(|_| bad())?;
        let ok = |n: u8| (1..=MAX_LAYERS).contains(&n);
        if !ok(spatial) || !ok(temporal) {
            return Err(bad());
        }
        Ok(SvcMode { spatial, temporal })
    }
}

impl fmt::Display for SvcMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}T{}_KEY", self.spatial, self.temporal)
    }
}

/// The temporal layers of a picture group, in order: (TID, U). U (a
/// switching point) as Chromium's non-flexible L1T3 group announces it.
fn group(temporal_layers: u8) -> &'static [(u8, bool)] {
    match temporal_layers {
        0 | 1 => &[(0, false)],
        2 => &[(0, false), (1, true)],
        _ => &[(0, false), (2, true), (1, true), (2, false)],
    }
}

/// Pictures in a group of `temporal_layers`.
pub fn group_len(temporal_layers: u8) -> usize {
    group(temporal_layers).len()
}

/// TID and U of picture `i` (0: the group's first) of a group.
pub fn temporal_of(temporal_layers: u8, i: usize) -> (u8, bool) {
    let g = group(temporal_layers);
    g[i % g.len()]
}

/// A frame's size relative to the layer's average for its temporal layer:
/// base-layer frames are larger (they are referenced the longest), as an
/// encoder spends its bits. Averages 1 over a group.
pub fn temporal_weight(temporal_layers: u8, tid: u8) -> f64 {
    match (temporal_layers, tid) {
        (0 | 1, _) => 1.0,
        (2, 0) => 1.3,
        (2, _) => 0.7,
        (_, 0) => 1.6,
        (_, 1) => 1.2,
        _ => 0.6,
    }
}

/// The stream's scalability structure: what a key picture announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    pub spatial_layers: u8,
    pub temporal_layers: u8,
    /// Width and height of each spatial layer, lowest first (the first
    /// `spatial_layers` are used).
    pub sizes: [(u16, u16); MAX_LAYERS as usize],
}

/// Where one frame sits in its stream (a VP9 stream's, or an AV1 stream's:
/// `av1` and `dd` use the same layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Layer {
    pub spatial: u8,
    pub temporal: u8,
    /// U: a temporal switching point.
    pub switch_up: bool,
    pub structure: Structure,
}

impl Vp9Layer {
    /// The one layer of a stream without scalability.
    pub fn single(width: u32, height: u32) -> Vp9Layer {
        let size = (width.min(0xffff) as u16, height.min(0xffff) as u16);
        Vp9Layer {
            spatial: 0,
            temporal: 0,
            switch_up: false,
            structure: Structure {
                spatial_layers: 1,
                temporal_layers: 1,
                sizes: [size; MAX_LAYERS as usize],
            },
        }
    }

    /// The picture's last layer frame: it carries the RTP marker.
    pub fn ends_picture(&self) -> bool {
        self.spatial + 1 >= self.structure.spatial_layers
    }
}

/// One VP9 stream's descriptor numbering: picture id and TL0PICIDX of the
/// picture being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Numbering {
    pub picture_id: u16,
    pub tl0: u8,
}

impl Vp9Numbering {
    /// Numbering from a seed (e.g. the stream's SSRC), as encoders start at
    /// a random picture id.
    pub fn seeded(seed: u32) -> Vp9Numbering {
        Vp9Numbering {
            picture_id: (seed & 0x7fff) as u16,
            tl0: (seed >> 16) as u8,
        }
    }
}

/// Descriptor bytes before the scalability structure: flags, picture id
/// (2), layer indices, TL0PICIDX.
const DESCRIPTOR: usize = 5;

/// The scalability structure: N_S, Y, G, the sizes, the picture group.
fn structure(s: &Structure) -> Vec<u8> {
    let layers = s.spatial_layers.clamp(1, MAX_LAYERS);
    let g = group(s.temporal_layers);
    let grouped = g.len() > 1;
    let mut out = Vec::with_capacity(2 + 4 * usize::from(layers) + 2 * g.len());
    // N_S (3) | Y (1) | G (1) | RES (3).
    out.push(((layers - 1) << 5) | 0x10 | if grouped { 0x08 } else { 0 });
    for (w, h) in &s.sizes[..usize::from(layers)] {
        out.extend_from_slice(&w.to_be_bytes());
        out.extend_from_slice(&h.to_be_bytes());
    }
    if grouped {
        out.push(g.len() as u8); // N_G
        for (i, (tid, u)) in g.iter().enumerate() {
            // One reference: the previous picture of a lower layer (the
            // previous group's base for the base layer).
            let diff = match i {
                0 => g.len() as u8,
                _ => g[..i]
                    .iter()
                    .rposition(|(t, _)| t < tid)
                    .map_or(1, |j| (i - j) as u8),
            };
            // TID (3) | U (1) | R (2) | RES (2), then R P_DIFFs.
            out.push((tid << 5) | if *u { 0x10 } else { 0 } | (1 << 2));
            out.push(diff);
        }
    }
    out
}

/// One layer frame's payloads (`key`: the frame belongs to a key picture).
/// The picture id moves on after the picture's last layer; TL0PICIDX at
/// the first layer of each base-layer picture.
pub fn packetize(
    frame: &[u8],
    layer: &Vp9Layer,
    key: bool,
    n: &mut Vp9Numbering,
    max: usize,
) -> Vec<Vec<u8>> {
    if layer.spatial == 0 && layer.temporal == 0 {
        n.tl0 = n.tl0.wrapping_add(1);
    }
    let pid = n.picture_id & 0x7fff;
    let ss = (key && layer.spatial == 0).then(|| structure(&layer.structure));
    let indices = (layer.temporal.min(7) << 5)
        | if layer.switch_up { 0x10 } else { 0 }
        | (layer.spatial.min(7) << 1)
        | u8::from(key && layer.spatial > 0);
    let mut out = vec![];
    let mut rest = frame;
    while out.is_empty() || !rest.is_empty() {
        let first = out.is_empty();
        let head = DESCRIPTOR + ss.as_ref().filter(|_| first).map_or(0, Vec::len);
        let (data, tail) = rest.split_at(rest.len().min(max.saturating_sub(head).max(1)));
        rest = tail;
        let mut flags = I | L;
        if !key {
            flags |= P;
        }
        if first {
            flags |= B;
        }
        if rest.is_empty() {
            flags |= E;
        }
        let ss = ss.as_ref().filter(|_| first);
        if ss.is_some() {
            flags |= V;
        }
        let mut p = Vec::with_capacity(head + data.len());
        p.extend_from_slice(&[flags, 0x80 | (pid >> 8) as u8, pid as u8, indices, n.tl0]);
        if let Some(ss) = ss {
            p.extend_from_slice(ss);
        }
        p.extend_from_slice(data);
        out.push(p);
    }
    if layer.ends_picture() {
        n.picture_id = (pid + 1) & 0x7fff;
    }
    out
}

/// A VP9 payload descriptor as a receiver reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp9Descriptor {
    /// Bytes of the descriptor: the frame data follows.
    pub len: usize,
    /// B: the first packet of a layer frame.
    pub begin: bool,
    /// E: the last packet of a layer frame.
    pub end: bool,
    /// P: predicted from an earlier picture (not a key picture).
    pub inter: bool,
    pub picture_id: Option<u16>,
    pub spatial: u8,
    pub temporal: u8,
    /// U: a temporal switching point.
    pub switch_up: bool,
    /// D: depends on the spatial layer below.
    pub inter_layer: bool,
    pub tl0: Option<u8>,
    /// V: the scalability structure is present (skipped over).
    pub structure: bool,
}

/// The descriptor at the start of `p` (None: cut short, flexible mode
/// reference indices aside, or no frame data after it).
pub fn descriptor(p: &[u8]) -> Option<Vp9Descriptor> {
    let flags = *p.first()?;
    let mut at = 1;
    let mut byte = || {
        let b = p.get(at).copied();
        at += 1;
        b
    };
    let mut d = Vp9Descriptor {
        begin: flags & B != 0,
        end: flags & E != 0,
        inter: flags & P != 0,
        structure: flags & V != 0,
        ..Default::default()
    };
    if flags & I != 0 {
        let m = byte()?;
        d.picture_id = Some(if m & 0x80 != 0 {
            (u16::from(m & 0x7f) << 8) | u16::from(byte()?)
        } else {
            u16::from(m)
        });
    }
    if flags & L != 0 {
        let l = byte()?;
        d.temporal = l >> 5;
        d.switch_up = l & 0x10 != 0;
        d.spatial = (l >> 1) & 0x07;
        d.inter_layer = l & 0x01 != 0;
        if flags & F == 0 {
            d.tl0 = Some(byte()?);
        }
    }
    if flags & F != 0 && flags & P != 0 {
        // P_DIFF (7) | N (1), up to three.
        for _ in 0..3 {
            if byte()? & 0x01 == 0 {
                break;
            }
        }
    }
    if d.structure {
        let ss = byte()?;
        if ss & 0x10 != 0 {
            for _ in 0..4 * ((ss >> 5) + 1) {
                byte()?;
            }
        }
        if ss & 0x08 != 0 {
            for _ in 0..byte()? {
                let refs = (byte()? >> 2) & 0x03;
                for _ in 0..refs {
                    byte()?;
                }
            }
        }
    }
    d.len = at;
    (p.len() > d.len).then_some(d)
}

#[cfg(test)]
#[path = "vp9_tests.rs"]
mod tests;
