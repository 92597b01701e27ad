//! The AV1 RTP Dependency Descriptor (DD) header extension: its types, the
//! sans-IO reader (`read.rs`) and writer (`write.rs`). Nothing here keeps
//! state between packets: the caller keeps the latest [`Structure`] of a
//! stream and passes it to [`read`].
//!
//! Specification: "RTP Payload Format For AV1", Appendix A (Dependency
//! Descriptor RTP Header Extension): A.4 (active decode targets), A.5
//! (chains), A.8.2 (syntax: `dependency_descriptor`,
//! `template_dependency_structure`, `frame_dependency_definition`, `ns(n)`),
//! A.8.3 (semantics, tables A.1 and A.2), A.9 ([`URI`]).
//!
//! # Choices
//!
//! - `template_id` is the wire `frame_dependency_template_id`; the template
//!   it names is `(template_id + 64 - template_id_offset) % 64` of the
//!   structure that applies (A.8.2 `frame_dependency_definition`), which is
//!   the one attached to the packet, else the latest one known.
//! - `active_decode_targets` holds only an explicit
//!   `active_decode_targets_bitmask`. When the packet attaches a structure
//!   without one, all decode targets are active (A.4, A.8.2
//!   `extended_descriptor_fields`): see
//!   [`Descriptor::active_decode_targets_or_default`]. When neither is
//!   present, the last update on the stream still holds.
//! - Custom per-frame fields are kept in fixed-size [`SmallList`]s, so
//!   reading a descriptor that attaches no structure does not allocate.
//!   Reading a structure allocates, bounded by the limits below.
//! - `zero_padding` is ignored on read (A.8.3) and written as zeros.
//!
//! # Limits (untrusted input: every read is bounded, nothing panics)
//!
//! At most 32 decode targets (5-bit `dt_cnt_minus_one`), `chain_cnt <=
//! dt_cnt` (`ns(dt_cnt + 1)`), at most 64 templates (the template id
//! space), spatial ids 0..=3 and temporal ids 0..=7 (the AV1 OBU extension
//! header's ranges; libwebrtc applies the same), at most [`MAX_FDIFFS`]
//! frame differences per template or frame (the spec's loops are
//! unbounded), and render sizes up to 65535 (a 65536 side is valid per the
//! spec but taken as `Malformed`, since sizes are `u16`). Beyond a limit the
//! descriptor is `Malformed`.

mod read;
#[cfg(test)]
mod tests;
mod write;

use std::sync::Arc;

pub use read::read;
pub use write::with_active_decode_targets;

/// The extension's URI in SDP `a=extmap` (A.9).
pub const URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// Templates a structure can hold: the `frame_dependency_template_id` space.
pub const MAX_TEMPLATES: usize = 64;
/// Decode targets a structure can describe (`dt_cnt_minus_one` is 5 bits).
pub const MAX_DECODE_TARGETS: usize = 32;
/// Highest spatial id accepted in a structure.
pub const MAX_SPATIAL_ID: u8 = 3;
/// Highest temporal id accepted in a structure.
pub const MAX_TEMPORAL_ID: u8 = 7;
/// Frame differences accepted per template or per frame (`custom_fdiffs`).
pub const MAX_FDIFFS: usize = 15;

/// Decode target indication (A.8.3 table A.1), 2 bits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dti {
    /// 0: the frame is not part of the decode target.
    #[default]
    NotPresent,
    /// 1: part of it, and no later frame of it refers to this frame.
    Discardable,
    /// 2: part of it, and the decode target can be switched to here.
    Switch,
    /// 3: part of it, neither discardable nor a switch point.
    Required,
}

impl Dti {
    /// The DTI of a 2-bit wire value (higher bits are ignored).
    pub fn from_bits(value: u32) -> Dti {
        match value & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }

    /// The 2-bit wire value.
    pub fn bits(self) -> u32 {
        self as u32
    }
}

/// One frame dependency template of a [`Structure`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FrameTemplate {
    pub spatial: u8,
    pub temporal: u8,
    /// One per decode target (`template_dti`).
    pub dtis: Vec<Dti>,
    /// Frame number differences to the referred frames, each 1..=16.
    pub fdiffs: Vec<u8>,
    /// One per chain (`template_chain_fdiff`), each 0..=15.
    pub chain_fdiffs: Vec<u8>,
}

impl FrameTemplate {
    /// A template written as the specification's and libwebrtc's tables
    /// write them: one character per decode target in `dtis` ('S' switch,
    /// 'R' required, 'D' discardable, anything else not present).
    pub fn from_table(
        spatial: u8,
        temporal: u8,
        dtis: &str,
        fdiffs: &[u8],
        chain_fdiffs: &[u8],
    ) -> FrameTemplate {
        let dtis = dtis
            .chars()
            .map(|c| match c {
                'D' => Dti::Discardable,
                'S' => Dti::Switch,
                'R' => Dti::Required,
                _ => Dti::NotPresent,
            })
            .collect();
        FrameTemplate {
            spatial,
            temporal,
            dtis,
            fdiffs: fdiffs.to_vec(),
            chain_fdiffs: chain_fdiffs.to_vec(),
        }
    }
}

/// A `template_dependency_structure()` (A.8.2). Templates are ordered by
/// (spatial, temporal) as the wire format requires; see
/// [`Structure::validate`] for the invariants [`read`] guarantees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Structure {
    /// The `frame_dependency_template_id` of template 0 (0..64).
    pub template_id_offset: u8,
    /// `dt_cnt`, 1..=32.
    pub decode_targets: u8,
    /// 1..=64 templates.
    pub templates: Vec<FrameTemplate>,
    /// `chain_cnt`, 0..=`decode_targets`.
    pub chains: u8,
    /// The chain protecting each decode target (empty when `chains` is 0).
    pub decode_target_protected_by: Vec<u8>,
    /// Maximum render (width, height) per spatial layer, lowest first;
    /// empty when the structure does not carry them.
    pub resolutions: Vec<(u16, u16)>,
}

impl Structure {
    /// Index in `templates` of a `frame_dependency_template_id`, if the
    /// structure has it.
    pub fn template_index(&self, template_id: u8) -> Option<usize> {
        let index = (usize::from(template_id) + MAX_TEMPLATES
            - usize::from(self.template_id_offset) % MAX_TEMPLATES)
            % MAX_TEMPLATES;
        (index < self.templates.len()).then_some(index)
    }

    /// Number of spatial layers: the highest template spatial id plus one.
    pub fn spatial_layers(&self) -> u8 {
        self.templates
            .iter()
            .map(|t| t.spatial)
            .max()
            .map_or(0, |s| s + 1)
    }

    /// Bitmask with every decode target set: `(1 << dt_cnt) - 1`.
    pub fn all_decode_targets(&self) -> u32 {
        mask_of(u32::from(self.decode_targets))
    }

    /// (spatial, temporal) each decode target stands for: the highest
    /// spatial and temporal id among templates whose DTI for it is not
    /// `NotPresent` (A.8.2 `decode_target_layers`).
    pub fn decode_target_layers(&self) -> Vec<(u8, u8)> {
        (0..usize::from(self.decode_targets))
            .map(|dt| self.layers_of(dt))
            .collect()
    }

    /// Bitmask of the decode targets a subscriber receiving spatial layers
    /// `<= max_spatial` and temporal layers `<= max_temporal` can decode
    /// (bit i is decode target i, as in `active_decode_targets_bitmask`).
    pub fn decodable_targets(&self, max_spatial: u8, max_temporal: u8) -> u32 {
        (0..usize::from(self.decode_targets).min(MAX_DECODE_TARGETS))
            .filter(|&dt| {
                let (s, t) = self.layers_of(dt);
                s <= max_spatial && t <= max_temporal
            })
            .fold(0u32, |mask, dt| mask | 1u32 << dt)
    }

    /// (spatial, temporal) decode target `dt` stands for (see
    /// [`Structure::decode_target_layers`]), without collecting them all.
    pub fn layers_of(&self, dt: usize) -> (u8, u8) {
        self.templates
            .iter()
            .filter(|t| t.dtis.get(dt).is_some_and(|&d| d != Dti::NotPresent))
            .fold((0, 0), |(s, t), tpl| {
                (s.max(tpl.spatial), t.max(tpl.temporal))
            })
    }

    /// Whether the structure can be written as it is: everything [`read`]
    /// returns passes. `Err(Malformed)` when a count, id or value is out of
    /// its range or the templates are not in wire order (each template has
    /// the same layers as the previous one, the next temporal id, or the
    /// next spatial id with temporal id 0; the first is spatial 0 temporal
    /// 0).
    pub fn validate(&self) -> Result<(), DescriptorError> {
        let dt = usize::from(self.decode_targets);
        let chains = usize::from(self.chains);
        let ok = self.template_id_offset < 64
            && (1..=MAX_DECODE_TARGETS).contains(&dt)
            && (1..=MAX_TEMPLATES).contains(&self.templates.len())
            && chains <= dt
            && self.decode_target_protected_by.len() == if chains > 0 { dt } else { 0 }
            && self
                .decode_target_protected_by
                .iter()
                .all(|&c| c < self.chains)
            && (self.resolutions.is_empty()
                || self.resolutions.len() == usize::from(self.spatial_layers()))
            && self.resolutions.iter().all(|&(w, h)| w > 0 && h > 0)
            && self.templates.iter().all(|t| {
                t.spatial <= MAX_SPATIAL_ID
                    && t.temporal <= MAX_TEMPORAL_ID
                    && t.dtis.len() == dt
                    && t.fdiffs.len() <= MAX_FDIFFS
                    && t.fdiffs.iter().all(|&f| (1..=16).contains(&f))
                    && t.chain_fdiffs.len() == chains
                    && t.chain_fdiffs.iter().all(|&c| c <= 15)
            })
            && self
                .templates
                .first()
                .is_some_and(|t| (t.spatial, t.temporal) == (0, 0))
            && self
                .templates
                .windows(2)
                .all(|w| next_layer_idc(&w[0], &w[1]).is_some());
        if ok {
            Ok(())
        } else {
            Err(DescriptorError::Malformed)
        }
    }
}

/// `next_layer_idc` (A.8.3 table A.2) from template `a` to template `b`, or
/// `None` when the wire format cannot express the step.
pub(super) fn next_layer_idc(a: &FrameTemplate, b: &FrameTemplate) -> Option<u32> {
    if (b.spatial, b.temporal) == (a.spatial, a.temporal) {
        Some(0)
    } else if b.spatial == a.spatial && Some(b.temporal) == a.temporal.checked_add(1) {
        Some(1)
    } else if Some(b.spatial) == a.spatial.checked_add(1) && b.temporal == 0 {
        Some(2)
    } else {
        None
    }
}

/// `(1 << n) - 1` for n in 0..=32 (larger n saturate).
pub(super) fn mask_of(n: u32) -> u32 {
    ((1u64 << n.min(32)) - 1) as u32
}

/// A list of at most `N` items stored inline (no allocation), for the
/// custom per-frame fields. Compares, hashes and prints as a slice.
#[derive(Clone, Copy)]
pub struct SmallList<T, const N: usize> {
    len: u8,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> SmallList<T, N> {
    /// Capacity (at most 255: the length is a `u8`).
    pub const CAPACITY: usize = {
        assert!(N <= u8::MAX as usize, "SmallList capacity beyond 255");
        N
    };

    pub fn new() -> Self {
        let _ = Self::CAPACITY;
        SmallList {
            len: 0,
            items: [T::default(); N],
        }
    }

    /// The list of `items`, or `None` when there are more than `N`.
    pub fn from_slice(items: &[T]) -> Option<Self> {
        let mut list = Self::new();
        for &item in items {
            list.push(item).ok()?;
        }
        Some(list)
    }

    /// Appends `item`; `Err(item)` when the list is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        let slot = self.items.get_mut(usize::from(self.len)).ok_or(item)?;
        *slot = item;
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[T] {
        self.items.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl<T: Copy + Default, const N: usize> Default for SmallList<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> std::ops::Deref for SmallList<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for SmallList<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Copy + Default + Eq, const N: usize> Eq for SmallList<T, N> {}

impl<T: Copy + Default + std::fmt::Debug, const N: usize> std::fmt::Debug for SmallList<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Custom DTIs of a frame (`frame_dti`), one per decode target.
pub type CustomDtis = SmallList<Dti, MAX_DECODE_TARGETS>;
/// Custom frame differences of a frame (`frame_fdiffs`), each 1..=4096.
pub type CustomFdiffs = SmallList<u16, MAX_FDIFFS>;
/// Custom chain differences of a frame (`frame_chain_fdiff`), one per chain.
pub type CustomChains = SmallList<u8, MAX_DECODE_TARGETS>;

/// One packet's dependency descriptor (A.8.2 `dependency_descriptor`).
/// `write` then `read` gives back an equal descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    pub start_of_frame: bool,
    pub end_of_frame: bool,
    /// `frame_dependency_template_id` as on the wire (0..64).
    pub template_id: u8,
    pub frame_number: u16,
    /// The `template_dependency_structure` this packet attaches.
    pub structure: Option<Arc<Structure>>,
    /// An explicit `active_decode_targets_bitmask` (bit i: decode target
    /// i); see [`Descriptor::active_decode_targets_or_default`].
    pub active_decode_targets: Option<u32>,
    /// `frame_dti`, when `custom_dtis_flag` is set.
    pub custom_dtis: Option<CustomDtis>,
    /// `frame_fdiffs`, when `custom_fdiffs_flag` is set (may be empty).
    pub custom_fdiffs: Option<CustomFdiffs>,
    /// `frame_chain_fdiff`, when `custom_chains_flag` is set.
    pub custom_chains: Option<CustomChains>,
}

impl Descriptor {
    /// The structure that applies to this packet: the attached one, else
    /// `known` (the latest one received on the stream).
    pub fn structure_or<'a>(
        &'a self,
        known: Option<&'a Arc<Structure>>,
    ) -> Option<&'a Arc<Structure>> {
        self.structure.as_ref().or(known)
    }

    /// The active decode targets this packet signals (A.4): the explicit
    /// bitmask, else all decode targets when it attaches a structure, else
    /// `None` (the last update on the stream still holds).
    pub fn active_decode_targets_or_default(&self) -> Option<u32> {
        self.active_decode_targets
            .or_else(|| self.structure.as_ref().map(|s| s.all_decode_targets()))
    }

    /// Index of the frame's template in `structure` (the one that applies).
    pub fn template_index(&self, structure: &Structure) -> Option<usize> {
        structure.template_index(self.template_id)
    }

    /// The frame's template in `structure`.
    pub fn template<'s>(&self, structure: &'s Structure) -> Option<&'s FrameTemplate> {
        structure.templates.get(self.template_index(structure)?)
    }

    /// The frame's spatial id.
    pub fn spatial(&self, structure: &Structure) -> Option<u8> {
        Some(self.template(structure)?.spatial)
    }

    /// The frame's temporal id.
    pub fn temporal(&self, structure: &Structure) -> Option<u8> {
        Some(self.template(structure)?.temporal)
    }

    /// The frame's DTIs, one per decode target: custom, else the template's.
    pub fn dtis<'a>(&'a self, structure: &'a Structure) -> Option<&'a [Dti]> {
        let template = self.template(structure)?;
        Some(match &self.custom_dtis {
            Some(custom) => custom.as_slice(),
            None => &template.dtis,
        })
    }

    /// The frame's frame number differences to the frames it refers to:
    /// custom, else the template's.
    pub fn fdiffs<'a>(
        &'a self,
        structure: &'a Structure,
    ) -> Option<impl Iterator<Item = u16> + 'a> {
        let template = self.template(structure)?;
        let (from_template, custom): (&[u8], &[u16]) = match &self.custom_fdiffs {
            Some(custom) => (&[], custom.as_slice()),
            None => (&template.fdiffs, &[]),
        };
        Some(
            from_template
                .iter()
                .map(|&f| u16::from(f))
                .chain(custom.iter().copied()),
        )
    }

    /// The frame's chain differences, one per chain: custom, else the
    /// template's.
    pub fn chain_fdiffs<'a>(&'a self, structure: &'a Structure) -> Option<&'a [u8]> {
        let template = self.template(structure)?;
        Some(match &self.custom_chains {
            Some(custom) => custom.as_slice(),
            None => &template.chain_fdiffs,
        })
    }

    /// The maximum render size of the frame's spatial layer, when the
    /// structure carries resolutions (`FrameMaxWidth`, `FrameMaxHeight`).
    pub fn resolution(&self, structure: &Structure) -> Option<(u16, u16)> {
        let spatial = self.spatial(structure)?;
        structure.resolutions.get(usize::from(spatial)).copied()
    }
}

/// Why a dependency descriptor could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The descriptor ends inside a field it announces.
    #[error("dependency descriptor is truncated")]
    Truncated,
    /// A field is out of the range the spec (or a limit of this module)
    /// allows.
    #[error("dependency descriptor is malformed")]
    Malformed,
    /// No structure is attached and none is known for the stream.
    #[error("dependency descriptor needs a template structure, none is known")]
    UnknownStructure,
    /// The template id is not in the structure that applies (the packet
    /// carrying a newer structure may have been lost).
    #[error("dependency descriptor template id is not in the structure")]
    UnknownTemplate,
}
