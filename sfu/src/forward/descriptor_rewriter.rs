//! The AV1 dependency descriptor on its way to one subscriber: what the
//! router needs of a publisher packet's descriptor ([`ReadDescriptor`],
//! read once for everyone), and per outgoing stream the
//! [`DescriptorRewriter`], which keeps the frame numbers continuous across
//! a switch of source (a simulcast stream, another publisher) and tells
//! the subscriber which decode targets it can decode, as the AV1 RTP
//! specification asks of a forwarder that drops layers (A.4:
//! `active_decode_targets_bitmask`, in every packet while some are
//! dropped, so a lost packet does not lose the news).
//!
//! Sans-IO: bytes in, bytes out; the str0m glue is `room::dd_extension`.

use std::sync::Arc;

use crate::forward::codec::dependency_descriptor::{Descriptor, Dti, Structure};
use crate::forward::codec::{SpatialDims, MAX_SPATIAL_LAYERS};

/// A publisher packet's dependency descriptor, read with the structure of
/// its stream.
#[derive(Debug, Clone)]
pub struct ReadDescriptor {
    pub descriptor: Descriptor,
    /// The structure that applies (attached here or to an earlier packet).
    pub structure: Arc<Structure>,
    /// The bytes as received.
    pub raw: Arc<[u8]>,
    /// The frame's spatial and temporal ids (from its template).
    pub spatial: u8,
    pub temporal: u8,
}

impl ReadDescriptor {
    /// `descriptor` read with `structure`; None when its template is not
    /// in the structure (the reader refuses those already).
    pub fn new(descriptor: Descriptor, structure: Arc<Structure>, raw: Arc<[u8]>) -> Option<Self> {
        let template = descriptor.template(&structure)?;
        let (spatial, temporal) = (template.spatial, template.temporal);
        Some(ReadDescriptor {
            descriptor,
            structure,
            raw,
            spatial,
            temporal,
        })
    }

    /// A temporal switching-up point: a decode target of this frame's
    /// layers may switch to it (its DTI is `Switch`).
    pub fn is_switch_point(&self) -> bool {
        let Some(dtis) = self.descriptor.dtis(&self.structure) else {
            return false;
        };
        dtis.iter().enumerate().any(|(dt, dti)| {
            *dti == Dti::Switch && self.structure.layers_of(dt) == (self.spatial, self.temporal)
        })
    }

    /// The spatial layers' sizes, when this packet attaches a structure
    /// that carries them.
    pub fn spatial_dims(&self) -> Option<SpatialDims> {
        let structure = self.descriptor.structure.as_ref()?;
        if structure.resolutions.is_empty() {
            return None;
        }
        let mut dims: SpatialDims = [None; MAX_SPATIAL_LAYERS];
        for (slot, (w, h)) in dims.iter_mut().zip(&structure.resolutions) {
            *slot = Some((u32::from(*w), u32::from(*h)));
        }
        Some(dims)
    }
}

/// One outgoing stream's descriptor state.
#[derive(Debug, Default, Clone)]
pub struct DescriptorRewriter {
    /// Added to incoming frame numbers (changes at a switch of source).
    offset: u16,
    /// The newest frame number sent.
    last_out: Option<u16>,
    /// The active decode targets the subscriber was last told of (None:
    /// all, as after every structure).
    told: Option<u32>,
}

impl DescriptorRewriter {
    /// The bytes to send for `dd` to a subscriber that receives spatial
    /// and temporal layers up to `layers` (None: everything, as a relay).
    /// `fresh`: the stream starts over here (a switch to another source),
    /// so frame numbers continue from the last sent.
    pub fn rewrite(
        &mut self,
        dd: &ReadDescriptor,
        layers: Option<(u8, u8)>,
        fresh: bool,
    ) -> Arc<[u8]> {
        let incoming = dd.descriptor.frame_number;
        if fresh {
            if let Some(last) = self.last_out {
                self.offset = last.wrapping_add(1).wrapping_sub(incoming);
            }
        }
        let out = incoming.wrapping_add(self.offset);
        if self
            .last_out
            .is_none_or(|last| (out.wrapping_sub(last) as i16) > 0)
        {
            self.last_out = Some(out);
        }
        if dd.descriptor.structure.is_some() {
            self.told = None; // a structure makes every decode target active
        }
        let all = dd.structure.all_decode_targets();
        let own = dd.descriptor.active_decode_targets;
        let ours = layers.map(|(s, t)| dd.structure.decodable_targets(s, t));
        let mask = match (own, ours) {
            (Some(own), Some(ours)) => Some(own & ours),
            (own, ours) => own.or(ours),
        };
        // Written when it says something the subscriber does not know: a
        // restriction, or the end of one.
        let mask = mask.filter(|m| *m != all || self.told.is_some_and(|t| t != all));
        if let Some(m) = mask {
            self.told = Some(m);
        }
        if out == incoming && mask == own {
            return dd.raw.clone();
        }
        let mut descriptor = dd.descriptor.clone();
        descriptor.frame_number = out;
        descriptor.active_decode_targets = mask;
        Arc::from(descriptor.write(&dd.structure))
    }
}

#[cfg(test)]
#[path = "descriptor_rewriter_tests.rs"]
mod tests;
