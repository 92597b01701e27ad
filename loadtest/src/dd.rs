//! The AV1 dependency descriptor (DD) as the generator shapes and reads it
//! (sans-IO): the template structure of a scalability mode as libwebrtc's
//! `ScalabilityStructureKeySvc` (Chromium's `L3T3_KEY`) and `L1T3`
//! describe it, which template each layer frame uses, and, for a receiver,
//! each packet's frame boundaries and layers read with the latest structure
//! of its stream.
//!
//! Structure of `LxTy`: decode target `y * s + t` for spatial layer s and
//! temporal layer t, one chain per spatial layer protecting its decode
//! targets, the spatial layers' sizes as resolutions. Per spatial layer,
//! sorted by temporal id as the wire format asks: the key picture's frame
//! (the base layer's refers to nothing, an upper layer's to the layer
//! below in its picture), the base temporal layer's frame of other
//! pictures (refers to the same layer's previous base frame: spatial
//! layers above 0 depend on the one below on key pictures only), then one
//! template per other picture of the temporal group (0, 2, 1, 2), each
//! referring to the group's last picture of a lower temporal layer.
//! Frame numbers count layer frames, so a picture of x spatial layers
//! moves them on by x.
//!
//! The bytes are written and read with the server's own DD writer and
//! reader (`sfu::forward::codec::dependency_descriptor`): the writer is the
//! specification's, the reader is tested on captured Chromium bytes.

use std::sync::Arc;

pub use sfu::forward::codec::dependency_descriptor::{
    read, Descriptor, Dti, FrameTemplate, Structure as DdStructure,
};

use crate::vp9::{group_len, temporal_of, Structure as Layers, Vp9Layer, MAX_LAYERS};

/// Pictures of the temporal group after the first, ordered as their
/// templates are: by temporal layer, then position.
fn later_pictures(temporal_layers: u8) -> Vec<(usize, u8)> {
    let mut pictures: Vec<(usize, u8)> = (1..group_len(temporal_layers))
        .map(|p| (p, temporal_of(temporal_layers, p).0))
        .collect();
    pictures.sort_by_key(|&(p, t)| (t, p));
    pictures
}

/// The picture of the group a picture at `p` refers to: the last one
/// before it on a lower temporal layer (the group's first for the base).
fn referred(temporal_layers: u8, p: usize) -> usize {
    let tid = temporal_of(temporal_layers, p).0;
    (0..p)
        .rev()
        .find(|&q| temporal_of(temporal_layers, q).0 < tid)
        .unwrap_or(0)
}

/// Templates per spatial layer: the key picture's, then one per picture of
/// the temporal group.
fn per_layer(temporal_layers: u8) -> usize {
    1 + group_len(temporal_layers)
}

/// The template structure of a stream of `layers`, its template ids
/// starting at `offset` (0..64).
pub fn structure(layers: &Layers, offset: u8) -> DdStructure {
    let spatial = layers.spatial_layers.clamp(1, MAX_LAYERS);
    let temporal = layers.temporal_layers.clamp(1, MAX_LAYERS);
    let group = group_len(temporal);
    let frames = group * usize::from(spatial); // layer frames per group
    let targets = usize::from(spatial * temporal);
    // The DTIs of a frame of spatial layer `s` with `dti(ss, tt)` for the
    // decode targets of its own layer; the others' are `NotPresent`.
    let dtis = |f: &dyn Fn(u8, u8) -> Dti| -> Vec<Dti> {
        (0..targets)
            .map(|dt| {
                f(
                    (dt / usize::from(temporal)) as u8,
                    (dt % usize::from(temporal)) as u8,
                )
            })
            .collect()
    };
    let mut templates = vec![];
    for s in 0..spatial {
        let si = usize::from(s);
        // The key picture's frame: every decode target of its layer and
        // the layers above can start here.
        templates.push(FrameTemplate {
            spatial: s,
            temporal: 0,
            dtis: dtis(&|ss, _| {
                if ss >= s {
                    Dti::Switch
                } else {
                    Dti::NotPresent
                }
            }),
            fdiffs: if s == 0 { vec![] } else { vec![1] },
            chain_fdiffs: (0..spatial)
                .map(|c| match (s, c) {
                    (0, _) => 0,
                    _ if c < s => s - c,
                    _ => 1,
                })
                .collect(),
        });
        // The base temporal layer's frame of the group's first picture:
        // the previous group's is `frames` back; a chain of a lower layer
        // was last in this picture.
        templates.push(FrameTemplate {
            spatial: s,
            temporal: 0,
            dtis: dtis(&|ss, _| {
                if ss == s {
                    Dti::Switch
                } else {
                    Dti::NotPresent
                }
            }),
            fdiffs: vec![frames as u8],
            chain_fdiffs: (0..spatial)
                .map(|c| match c < s {
                    true => s - c,
                    false => (frames + si - usize::from(c)) as u8,
                })
                .collect(),
        });
        for (p, t) in later_pictures(temporal) {
            let n = p * usize::from(spatial) + si; // frame number in the group
            templates.push(FrameTemplate {
                spatial: s,
                temporal: t,
                dtis: dtis(&|ss, tt| match (ss == s, tt.cmp(&t)) {
                    (true, std::cmp::Ordering::Equal) => Dti::Discardable,
                    (true, std::cmp::Ordering::Greater) => Dti::Switch,
                    _ => Dti::NotPresent,
                }),
                fdiffs: vec![((p - referred(temporal, p)) * usize::from(spatial)) as u8],
                chain_fdiffs: (0..spatial).map(|c| (n - usize::from(c)) as u8).collect(),
            });
        }
    }
    DdStructure {
        template_id_offset: offset % 64,
        decode_targets: targets as u8,
        templates,
        chains: spatial,
        decode_target_protected_by: (0..targets)
            .map(|dt| (dt / usize::from(temporal)) as u8)
            .collect(),
        resolutions: layers.sizes[..usize::from(spatial)]
            .iter()
            .map(|&(w, h)| (w.max(1), h.max(1)))
            .collect(),
    }
}

/// The index in `structure` (made by [`structure`] for `layers`) of the
/// template of `layer`'s frame, `pictures` after the last key picture
/// (`key`: in the key picture). A layer the schedule does not expect at
/// that position gets the first template of its spatial and temporal id.
pub fn template_index(
    structure: &DdStructure,
    layers: &Layers,
    layer: &Vp9Layer,
    key: bool,
    pictures: usize,
) -> usize {
    let temporal = layers.temporal_layers.clamp(1, MAX_LAYERS);
    let p = pictures % group_len(temporal);
    let slot = match (key, p) {
        (true, 0) => 0,
        (false, 0) => 1,
        _ => {
            2 + later_pictures(temporal)
                .iter()
                .position(|&(q, _)| q == p)
                .unwrap_or(0)
        }
    };
    let index = usize::from(layer.spatial) * per_layer(temporal) + slot;
    let fits = |t: &FrameTemplate| (t.spatial, t.temporal) == (layer.spatial, layer.temporal);
    match structure.templates.get(index) {
        Some(t) if fits(t) => index,
        _ => structure.templates.iter().position(fits).unwrap_or(0),
    }
}

/// What a receiver reads from one packet's descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdFrame {
    /// The first and the last packet of a layer frame.
    pub start: bool,
    pub end: bool,
    pub spatial: u8,
    pub temporal: u8,
    /// The frame refers to no earlier picture (at most to the layers below
    /// in its own): a key picture's.
    pub key_picture: bool,
}

/// One incoming stream's descriptors: the latest structure it sent.
#[derive(Debug, Clone, Default)]
pub struct DdReader {
    structure: Option<Arc<DdStructure>>,
}

impl DdReader {
    /// Read a packet's descriptor (None: unreadable, or no structure known
    /// yet for it); a structure it attaches is kept for the packets after.
    pub fn read(&mut self, bytes: &[u8]) -> Option<DdFrame> {
        let d = read(bytes, self.structure.as_ref()).ok()?;
        if let Some(s) = &d.structure {
            self.structure = Some(s.clone());
        }
        let s = d.structure_or(self.structure.as_ref())?;
        let template = d.template(s)?;
        let spatial = template.spatial;
        let key_picture = d.fdiffs(s)?.all(|f| f <= u16::from(spatial));
        Some(DdFrame {
            start: d.start_of_frame,
            end: d.end_of_frame,
            spatial,
            temporal: template.temporal,
            key_picture,
        })
    }

    /// The structure the stream sent last.
    pub fn structure(&self) -> Option<&Arc<DdStructure>> {
        self.structure.as_ref()
    }
}
