//! The dependency descriptor reader: A.8.2 `dependency_descriptor(sz)` with
//! its mandatory and extended fields, `template_dependency_structure()` and
//! `frame_dependency_definition()`, checked against the limits listed in the
//! parent module's doc. Reads with the shared bounded bit reader
//! (`codec::bits`); only an attached structure allocates.

use std::sync::Arc;

use super::{
    CustomChains, CustomDtis, CustomFdiffs, Descriptor, DescriptorError, Dti, FrameTemplate,
    Structure, MAX_FDIFFS, MAX_SPATIAL_ID, MAX_TEMPLATES, MAX_TEMPORAL_ID,
};
use crate::forward::codec::bits::Bits;

use DescriptorError::{Malformed, Truncated, UnknownStructure, UnknownTemplate};

/// Reads one dependency descriptor (the extension's data, `sz` = its
/// length). `known` is the latest structure received on this stream (`None`
/// before the first); a structure the packet attaches takes precedence for
/// this packet, and the caller should keep it as the new `known`.
pub fn read(data: &[u8], known: Option<&Arc<Structure>>) -> Result<Descriptor, DescriptorError> {
    let mut b = Bits::new(data);
    let b = &mut b;
    // mandatory_descriptor_fields()
    let start_of_frame = flag(b)?;
    let end_of_frame = flag(b)?;
    let template_id = f(b, 6)? as u8;
    let frame_number = f(b, 16)? as u16;

    // extended_descriptor_fields() when sz > 3, else no_extended_...().
    let mut attached = None;
    let (mut active_flag, mut dtis_flag, mut fdiffs_flag, mut chains_flag) =
        (false, false, false, false);
    if data.len() > 3 {
        let structure_flag = flag(b)?;
        active_flag = flag(b)?;
        dtis_flag = flag(b)?;
        fdiffs_flag = flag(b)?;
        chains_flag = flag(b)?;
        if structure_flag {
            attached = Some(Arc::new(read_structure(b)?));
        }
    }

    let (active_decode_targets, custom_dtis, custom_fdiffs, custom_chains) = {
        let structure: &Structure = match (&attached, known) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => return Err(UnknownStructure),
        };
        let active = if active_flag {
            Some(f(b, u32::from(structure.decode_targets))?)
        } else {
            None
        };
        // frame_dependency_definition()
        structure
            .template_index(template_id)
            .ok_or(UnknownTemplate)?;
        let dtis = if dtis_flag {
            let mut dtis = CustomDtis::new();
            for _ in 0..structure.decode_targets {
                dtis.push(Dti::from_bits(f(b, 2)?)).map_err(|_| Malformed)?;
            }
            Some(dtis)
        } else {
            None
        };
        let fdiffs = if fdiffs_flag {
            let mut fdiffs = CustomFdiffs::new();
            loop {
                let size = f(b, 2)?;
                if size == 0 {
                    break;
                }
                let fdiff = f(b, 4 * size)? + 1;
                fdiffs.push(fdiff as u16).map_err(|_| Malformed)?;
            }
            Some(fdiffs)
        } else {
            None
        };
        let chains = if chains_flag {
            let mut chains = CustomChains::new();
            for _ in 0..structure.chains {
                chains.push(f(b, 8)? as u8).map_err(|_| Malformed)?;
            }
            Some(chains)
        } else {
            None
        };
        (active, dtis, fdiffs, chains)
    };
    // zero_padding: the rest, ignored.
    Ok(Descriptor {
        start_of_frame,
        end_of_frame,
        template_id,
        frame_number,
        structure: attached,
        active_decode_targets,
        custom_dtis,
        custom_fdiffs,
        custom_chains,
    })
}

/// `template_dependency_structure()`.
fn read_structure(b: &mut Bits<'_>) -> Result<Structure, DescriptorError> {
    let template_id_offset = f(b, 6)? as u8;
    let decode_targets = f(b, 5)? as u8 + 1;

    // template_layers(): ids only ever step up (table A.2), from (0, 0).
    let mut templates: Vec<FrameTemplate> = Vec::new();
    let (mut spatial, mut temporal) = (0u8, 0u8);
    loop {
        templates.push(FrameTemplate {
            spatial,
            temporal,
            dtis: Vec::new(),
            fdiffs: Vec::new(),
            chain_fdiffs: Vec::new(),
        });
        match f(b, 2)? {
            0 => {}
            1 => {
                temporal += 1;
                if temporal > MAX_TEMPORAL_ID {
                    return Err(Malformed);
                }
            }
            2 => {
                spatial += 1;
                temporal = 0;
                if spatial > MAX_SPATIAL_ID {
                    return Err(Malformed);
                }
            }
            _ => break,
        }
        if templates.len() == MAX_TEMPLATES {
            return Err(Malformed);
        }
    }

    // template_dtis()
    for template in &mut templates {
        template.dtis.reserve_exact(usize::from(decode_targets));
        for _ in 0..decode_targets {
            template.dtis.push(Dti::from_bits(f(b, 2)?));
        }
    }

    // template_fdiffs()
    for template in &mut templates {
        while flag(b)? {
            if template.fdiffs.len() == MAX_FDIFFS {
                return Err(Malformed);
            }
            template.fdiffs.push(f(b, 4)? as u8 + 1);
        }
    }

    // template_chains()
    let chains = ns(b, u32::from(decode_targets) + 1)? as u8;
    let mut decode_target_protected_by = Vec::new();
    if chains > 0 {
        decode_target_protected_by.reserve_exact(usize::from(decode_targets));
        for _ in 0..decode_targets {
            decode_target_protected_by.push(ns(b, u32::from(chains))? as u8);
        }
        for template in &mut templates {
            template.chain_fdiffs.reserve_exact(usize::from(chains));
            for _ in 0..chains {
                template.chain_fdiffs.push(f(b, 4)? as u8);
            }
        }
    }

    // decode_target_layers() is derived: Structure::decode_target_layers.

    // resolutions_present_flag, render_resolutions()
    let mut resolutions = Vec::new();
    if flag(b)? {
        let layers = usize::from(spatial) + 1;
        resolutions.reserve_exact(layers);
        for _ in 0..layers {
            let width = u16::try_from(f(b, 16)? + 1).map_err(|_| Malformed)?;
            let height = u16::try_from(f(b, 16)? + 1).map_err(|_| Malformed)?;
            resolutions.push((width, height));
        }
    }

    Ok(Structure {
        template_id_offset,
        decode_targets,
        templates,
        chains,
        decode_target_protected_by,
        resolutions,
    })
}

/// `f(n)`, n <= 32.
fn f(b: &mut Bits<'_>, n: u32) -> Result<u32, DescriptorError> {
    b.bits(n).ok_or(Truncated)
}

fn flag(b: &mut Bits<'_>) -> Result<bool, DescriptorError> {
    b.flag().ok_or(Truncated)
}

/// `ns(n)`: a value in 0..n, n >= 1 (A.8.2).
fn ns(b: &mut Bits<'_>, n: u32) -> Result<u32, DescriptorError> {
    let w = u32::BITS - n.leading_zeros();
    let m = (1u32 << w) - n;
    let v = f(b, w.saturating_sub(1))?;
    if v < m {
        return Ok(v);
    }
    let extra = f(b, 1)?;
    Ok((v << 1) - m + extra)
}
