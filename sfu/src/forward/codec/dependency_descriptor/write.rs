//! The dependency descriptor writer: serializes a [`Descriptor`] (A.8.2,
//! including `write_ns`) with a small MSB-first bit writer, and
//! [`with_active_decode_targets`], which an SFU uses to tell a subscriber
//! which decode targets it still forwards (A.4).
//!
//! Writing never fails or panics. For a descriptor that [`read`] returned
//! (or one whose structure passes [`Structure::validate`] and whose custom
//! fields have the structure's lengths and ranges), `read` of the output
//! gives back an equal descriptor. Otherwise values are clamped into their
//! wire ranges and missing entries written as zero, so the output is well
//! formed but may read back differently.
//!
//! [`read`]: super::read

use super::{mask_of, next_layer_idc, Descriptor, Dti, Structure, MAX_FDIFFS};

/// MSB-first bit writer; the last byte is zero padded.
pub(super) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte of `bytes` (0: a new byte is needed).
    used: u32,
}

impl BitWriter {
    pub(super) fn with_capacity(bytes: usize) -> BitWriter {
        BitWriter {
            bytes: Vec::with_capacity(bytes),
            used: 0,
        }
    }

    /// The low `n` bits of `value` (n <= 32), highest first.
    pub(super) fn put(&mut self, n: u32, value: u32) {
        for i in (0..n.min(32)).rev() {
            if self.used == 0 {
                self.bytes.push(0);
            }
            if let Some(last) = self.bytes.last_mut() {
                *last |= (((value >> i) & 1) as u8) << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    pub(super) fn flag(&mut self, set: bool) {
        self.put(1, u32::from(set));
    }

    /// The bytes written so far, the last one zero padded.
    pub(super) fn finish(self) -> Vec<u8> {
        self.bytes
    }

    /// `write_ns(n, v)`: v in 0..n (clamped).
    pub(super) fn ns(&mut self, n: u32, v: u32) {
        if n <= 1 {
            return;
        }
        let v = v.min(n - 1);
        let w = u32::BITS - n.leading_zeros();
        let m = (1u32 << w) - n;
        if v < m {
            self.put(w - 1, v);
        } else {
            self.put(w, v + m);
        }
    }
}

/// `dt_cnt` of a structure, clamped to the wire range 1..=32.
fn dt_count(s: &Structure) -> u32 {
    u32::from(s.decode_targets).clamp(1, 32)
}

/// `chain_cnt` of a structure, clamped to 0..=dt_cnt.
fn chain_count(s: &Structure) -> u32 {
    u32::from(s.chains).min(dt_count(s))
}

impl Descriptor {
    /// Serializes the descriptor: the mandatory fields alone (3 bytes) when
    /// nothing else is present, else the extended fields too; zero padded
    /// to a whole byte. `structure` is the one that applies to the packet
    /// (used for the counts of the bitmask and custom fields); an attached
    /// structure takes precedence over it, as on read.
    pub fn write(&self, structure: &Structure) -> Vec<u8> {
        self.write_with(structure, self.active_decode_targets)
    }

    fn write_with(&self, structure: &Structure, active: Option<u32>) -> Vec<u8> {
        let s = self.structure.as_deref().unwrap_or(structure);
        let dt = dt_count(s);
        let extended = self.structure.is_some()
            || active.is_some()
            || self.custom_dtis.is_some()
            || self.custom_fdiffs.is_some()
            || self.custom_chains.is_some();
        let mut w = BitWriter::with_capacity(if self.structure.is_some() { 64 } else { 8 });
        // mandatory_descriptor_fields()
        w.flag(self.start_of_frame);
        w.flag(self.end_of_frame);
        w.put(6, u32::from(self.template_id));
        w.put(16, u32::from(self.frame_number));
        if !extended {
            return w.finish();
        }
        // extended_descriptor_fields()
        w.flag(self.structure.is_some());
        w.flag(active.is_some());
        w.flag(self.custom_dtis.is_some());
        w.flag(self.custom_fdiffs.is_some());
        w.flag(self.custom_chains.is_some());
        if let Some(attached) = &self.structure {
            write_structure(&mut w, attached);
        }
        if let Some(mask) = active {
            w.put(dt, mask & mask_of(dt));
        }
        // frame_dependency_definition(): only the custom fields.
        if let Some(dtis) = &self.custom_dtis {
            for i in 0..dt as usize {
                w.put(2, dtis.get(i).copied().unwrap_or_default().bits());
            }
        }
        if let Some(fdiffs) = &self.custom_fdiffs {
            for &fdiff in fdiffs.iter().take(MAX_FDIFFS) {
                let minus_one = u32::from(fdiff).clamp(1, 4096) - 1;
                let size = match minus_one {
                    0..=0xf => 1,
                    0x10..=0xff => 2,
                    _ => 3,
                };
                w.put(2, size);
                w.put(4 * size, minus_one);
            }
            w.put(2, 0);
        }
        if let Some(chains) = &self.custom_chains {
            for i in 0..chain_count(s) as usize {
                w.put(8, u32::from(chains.get(i).copied().unwrap_or(0)));
            }
        }
        w.finish()
    }
}

/// `template_dependency_structure()`.
fn write_structure(w: &mut BitWriter, s: &Structure) {
    let dt = dt_count(s);
    let chains = chain_count(s);
    w.put(6, u32::from(s.template_id_offset));
    w.put(5, dt - 1);
    // template_layers(): an inexpressible step is written as "same layer".
    for (i, template) in s.templates.iter().enumerate() {
        let idc = match s.templates.get(i + 1) {
            Some(next) => next_layer_idc(template, next).unwrap_or(0),
            None => 3,
        };
        w.put(2, idc);
    }
    if s.templates.is_empty() {
        w.put(2, 3);
    }
    // template_dtis()
    for template in &s.templates {
        for i in 0..dt as usize {
            w.put(
                2,
                template
                    .dtis
                    .get(i)
                    .copied()
                    .unwrap_or(Dti::NotPresent)
                    .bits(),
            );
        }
    }
    // template_fdiffs()
    for template in &s.templates {
        for &fdiff in template.fdiffs.iter().take(MAX_FDIFFS) {
            w.flag(true);
            w.put(4, u32::from(fdiff.clamp(1, 16)) - 1);
        }
        w.flag(false);
    }
    // template_chains()
    w.ns(dt + 1, chains);
    if chains > 0 {
        for i in 0..dt as usize {
            let chain = s.decode_target_protected_by.get(i).copied().unwrap_or(0);
            w.ns(chains, u32::from(chain));
        }
        for template in &s.templates {
            for i in 0..chains as usize {
                let fdiff = template.chain_fdiffs.get(i).copied().unwrap_or(0);
                w.put(4, u32::from(fdiff.min(15)));
            }
        }
    }
    // resolutions_present_flag, render_resolutions(): one per spatial layer.
    w.flag(!s.resolutions.is_empty());
    if !s.resolutions.is_empty() {
        let last_spatial = s.templates.last().map_or(0, |t| t.spatial);
        for i in 0..=usize::from(last_spatial) {
            let (width, height) = s.resolutions.get(i).copied().unwrap_or((1, 1));
            w.put(16, u32::from(width.max(1)) - 1);
            w.put(16, u32::from(height.max(1)) - 1);
        }
    }
}

/// Rewrites a packet's descriptor with `active_decode_targets_bitmask` set
/// to `mask` (bits beyond the structure's decode targets are dropped),
/// adding the extended fields when the packet had none and keeping the
/// attached structure and any custom fields. `structure` is the one that
/// applies to the packet.
pub fn with_active_decode_targets(d: &Descriptor, structure: &Structure, mask: u32) -> Vec<u8> {
    d.write_with(structure, Some(mask))
}
