//! AV1 for the generator (sans-IO): what an encoder outputs for one layer
//! frame, its RTP payloads, and what a receiver reads back from a payload.
//! The frame's layers travel in the dependency descriptor header extension
//! (`dd`), which [`packetize`] writes next to each payload.
//!
//! - A layer frame is what libaom emits for it (the AV1 bitstream's low
//!   overhead format, every OBU with `obu_size`): the first frame of a
//!   temporal unit opens with a temporal delimiter; a key picture's base
//!   layer then has a sequence header (profile 0, one operating point per
//!   decode target, the top layer's size as the maximum frame size) and a
//!   frame OBU whose frame header says KEY_FRAME; every other frame is one
//!   frame OBU whose header says INTER_FRAME (the upper spatial layers of a
//!   key picture predict from the layer below, as in libaom's `L3T3_KEY`).
//!   A stream with layers gives its frame OBUs the extension header
//!   (temporal and spatial id). The frame OBU's payload is libaom's first
//!   frame header bytes, the measurement stamp, then filler.
//! - Payloads (AV1 RTP payload specification 4.4-4.5): the aggregation
//!   header (Z: the first element continues an OBU, Y: the last one goes on
//!   in the next packet, W: the element count, N: the first packet of a
//!   coded video sequence, i.e. of a key picture), then OBU elements, every
//!   one but the last behind its leb128 length. Temporal delimiters are
//!   dropped and `obu_size` fields removed, as the specification asks and
//!   libwebrtc's packetizer does.

use std::sync::Arc;

use crate::dd::{self, DdStructure, Descriptor};
use crate::stamp::Stamp;
use crate::vp9::{Structure as Layers, Vp9Layer};

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_FRAME: u8 = 6;
const OBU_TILE_LIST: u8 = 8;

/// The first bytes of libaom frame OBU payloads (`uncompressed_header`):
/// 10 = show_existing_frame 0, frame_type KEY_FRAME, show_frame 1; 30 =
/// frame_type INTER_FRAME. The stamp follows them.
const KEY_FRAME_HEADER: [u8; FRAME_HEADER] = [0x10, 0x00, 0x8c, 0x60, 0x1e, 0x79];
const INTER_FRAME_HEADER: [u8; FRAME_HEADER] = [0x30, 0x03, 0xc0, 0x80, 0x00, 0x00];
const FRAME_HEADER: usize = 6;

/// Aggregation header bits.
const Z: u8 = 0x80;
const Y: u8 = 0x40;
const N: u8 = 0x08;

/// MSB-first bit writer for the sequence header.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: usize,
}

impl Bits {
    fn put(&mut self, n: u32, value: u32) -> &mut Bits {
        for i in (0..n).rev() {
            if self.used.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if let Some(last) = self.bytes.last_mut() {
                *last |= (((value >> i) & 1) as u8) << (7 - self.used % 8);
            }
            self.used += 1;
        }
        self
    }

    /// `trailing_bits()`: a one, then zeros to the byte boundary.
    fn finish(mut self) -> Vec<u8> {
        self.put(1, 1);
        self.bytes
    }
}

/// Bits needed for `v` (at least 1).
fn bit_width(v: u32) -> u32 {
    (u32::BITS - v.leading_zeros()).max(1)
}

/// A `sequence_header_obu()` payload (AV1 bitstream 5.5) for a stream of
/// `layers`: profile 0 (8-bit 4:2:0), no timing info, one operating point
/// per decode target, highest first (`operating_point_idc`: spatial layers
/// in bits 8-11, temporal layers in bits 0-7; a stream without layers has
/// one, idc 0), level 4.0, the top spatial layer's size as the maximum
/// frame size, then the coding tools libaom's real-time mode announces.
pub fn sequence_header(layers: &Layers) -> Vec<u8> {
    let spatial = u32::from(layers.spatial_layers.clamp(1, 3));
    let temporal = u32::from(layers.temporal_layers.clamp(1, 3));
    let (w, h) = layers.sizes[(spatial - 1) as usize];
    let (w, h) = (u32::from(w.max(1)) - 1, u32::from(h.max(1)) - 1);
    let mut b = Bits::default();
    // seq_profile, still_picture, reduced_still_picture_header,
    // timing_info_present_flag, initial_display_delay_present_flag.
    b.put(3, 0).put(1, 0).put(1, 0).put(1, 0).put(1, 0);
    let mut points = vec![];
    if spatial * temporal > 1 {
        for s in (0..spatial).rev() {
            for t in (0..temporal).rev() {
                points.push((((1 << (s + 1)) - 1) << 8) | ((1 << (t + 1)) - 1));
            }
        }
    } else {
        points.push(0);
    }
    b.put(5, points.len() as u32 - 1);
    for idc in points {
        // operating_point_idc, seq_level_idx 8 (4.0), seq_tier 0.
        b.put(12, idc).put(5, 8).put(1, 0);
    }
    let (wb, hb) = (bit_width(w), bit_width(h));
    b.put(4, wb - 1).put(4, hb - 1).put(wb, w).put(hb, h);
    // frame_id_numbers_present_flag, use_128x128_superblock,
    // enable_filter_intra, enable_intra_edge_filter,
    // enable_interintra_compound, enable_masked_compound,
    // enable_warped_motion, enable_dual_filter, enable_order_hint,
    // enable_jnt_comp, enable_ref_frame_mvs,
    // seq_choose_screen_content_tools (SELECT), seq_choose_integer_mv
    // (SELECT), order_hint_bits_minus_1 (6).
    b.put(1, 0).put(1, 0).put(1, 1).put(1, 1);
    b.put(1, 0).put(1, 0).put(1, 0).put(1, 0).put(1, 1);
    b.put(1, 0).put(1, 0).put(1, 1).put(1, 1).put(3, 6);
    // enable_superres, enable_cdef, enable_restoration.
    b.put(1, 0).put(1, 1).put(1, 1);
    // color_config(): high_bitdepth, mono_chrome,
    // color_description_present_flag, color_range, chroma_sample_position,
    // separate_uv_delta_q; film_grain_params_present.
    b.put(1, 0)
        .put(1, 0)
        .put(1, 0)
        .put(1, 0)
        .put(2, 0)
        .put(1, 0);
    b.put(1, 0);
    b.finish()
}

/// `leb128()` of `v`.
fn put_leb128(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn leb128_len(v: usize) -> usize {
    let bits = (usize::BITS - v.leading_zeros()).max(1) as usize;
    bits.div_ceil(7)
}

/// A `leb128()` value and its length (None: cut short or over 8 bytes).
fn read_leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in data.iter().take(8).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// An OBU as an encoder writes it: header, extension header (temporal and
/// spatial id) when given, `obu_size`, payload.
fn put_obu(out: &mut Vec<u8>, kind: u8, ext: Option<(u8, u8)>, payload: &[u8]) {
    // forbidden 0 | type (4) | extension | has_size_field 1 | reserved.
    out.push((kind << 3) | if ext.is_some() { 0x04 } else { 0 } | 0x02);
    if let Some((t, s)) = ext {
        // temporal_id (3) | spatial_id (2) | reserved (3).
        out.push((t.min(7) << 5) | (s.min(3) << 3));
    }
    put_leb128(out, payload.len());
    out.extend_from_slice(payload);
}

/// One OBU of an encoder's output: its header byte, the extension byte
/// (if any) and payload.
struct Obu<'a> {
    header: u8,
    ext: Option<u8>,
    payload: &'a [u8],
}

impl Obu<'_> {
    fn kind(&self) -> u8 {
        (self.header >> 3) & 0x0f
    }
}

/// The OBUs of an encoder's output (each with `obu_size`; an OBU without
/// it runs to the end). Stops at the first one cut short.
fn obus(mut data: &[u8]) -> Vec<Obu<'_>> {
    let mut out = vec![];
    while let Some((&header, rest)) = data.split_first() {
        let (ext, rest) = match header & 0x04 {
            0 => (None, rest),
            _ => match rest.split_first() {
                Some((&e, r)) => (Some(e), r),
                None => break,
            },
        };
        let (payload, rest) = if header & 0x02 != 0 {
            let Some((size, n)) = read_leb128(rest) else {
                break;
            };
            match rest.get(n..).and_then(|r| r.split_at_checked(size)) {
                Some(split) => split,
                None => break,
            }
        } else {
            (rest, &[][..])
        };
        out.push(Obu {
            header,
            ext,
            payload,
        });
        data = rest;
    }
    out
}

/// The encoder's output for one layer frame of about `len` bytes carrying
/// `stamp` (`key`: the frame belongs to a key picture; only its base layer
/// is a KEY_FRAME).
pub fn frame(layer: &Vp9Layer, key: bool, len: usize, stamp: Stamp) -> Vec<u8> {
    let l = &layer.structure;
    let layered = l.spatial_layers > 1 || l.temporal_layers > 1;
    let ext = layered.then_some((layer.temporal, layer.spatial));
    let mut out = Vec::with_capacity(len + 64);
    if layer.spatial == 0 {
        put_obu(&mut out, OBU_TEMPORAL_DELIMITER, None, &[]);
    }
    let key_frame = key && layer.spatial == 0;
    if key_frame {
        put_obu(&mut out, OBU_SEQUENCE_HEADER, None, &sequence_header(l));
    }
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(match key_frame {
        true => &KEY_FRAME_HEADER,
        false => &INTER_FRAME_HEADER,
    });
    stamp.encode(&mut payload);
    // The OBU's own header and size field count towards `len`.
    let overhead = 1 + usize::from(ext.is_some()) + leb128_len(len);
    let seed = stamp.seq as u8;
    while out.len() + overhead + payload.len() < len {
        payload.push(0x80 | (payload.len() as u8 ^ seed));
    }
    put_obu(&mut out, OBU_FRAME, ext, &payload);
    out
}

/// The stamp in an encoder's output for one frame (its frame OBU's).
pub fn frame_stamp(data: &[u8]) -> Option<Stamp> {
    obus(data)
        .iter()
        .find(|o| o.kind() == OBU_FRAME)
        .and_then(|o| Stamp::decode_at(o.payload, FRAME_HEADER))
}

/// One stream's numbering: the descriptor's frame number, its template id
/// offset, the structure it announces and the pictures since the last key
/// picture (the position in the temporal group).
#[derive(Debug, Clone)]
pub struct Av1Numbering {
    pub frame_number: u16,
    pub template_offset: u8,
    pictures: usize,
    structure: Option<(Layers, Arc<DdStructure>)>,
}

impl Av1Numbering {
    /// Numbering from a seed (e.g. the stream's SSRC), as an encoder's
    /// frame numbers and structure ids start anywhere.
    pub fn seeded(seed: u32) -> Av1Numbering {
        Av1Numbering {
            frame_number: seed as u16,
            template_offset: (seed >> 16) as u8 % 64,
            pictures: 0,
            structure: None,
        }
    }

    /// The template structure of `layers` (kept until they change).
    fn structure(&mut self, layers: &Layers) -> Arc<DdStructure> {
        match &self.structure {
            Some((l, s)) if l == layers => s.clone(),
            _ => {
                let s = Arc::new(dd::structure(layers, self.template_offset));
                self.structure = Some((*layers, s.clone()));
                s
            }
        }
    }
}

/// One RTP packet of a layer frame: its payload and its dependency
/// descriptor's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Packet {
    pub payload: Vec<u8>,
    pub descriptor: Vec<u8>,
}

/// One layer frame's packets (`frame`: the encoder's output, see
/// [`frame`]; `key`: it belongs to a key picture). Payloads hold at most
/// `max` bytes, less on the packet carrying the template structure by the
/// structure's size. The frame number moves on per frame; the position in
/// the temporal group per picture, from 0 at a key picture.
pub fn packetize(
    frame: &[u8],
    layer: &Vp9Layer,
    key: bool,
    n: &mut Av1Numbering,
    max: usize,
) -> Vec<Av1Packet> {
    let structure = n.structure(&layer.structure);
    if key && layer.spatial == 0 {
        n.pictures = 0;
    }
    let index = dd::template_index(&structure, &layer.structure, layer, key, n.pictures);
    let descriptor = |start: bool, end: bool, attach: bool| {
        Descriptor {
            start_of_frame: start,
            end_of_frame: end,
            template_id: ((usize::from(n.template_offset) + index) % 64) as u8,
            frame_number: n.frame_number,
            structure: attach.then(|| structure.clone()),
            ..Descriptor::default()
        }
        .write(&structure)
    };
    let attach = key && layer.spatial == 0;
    // The structure's bytes take room from the first packet's payload.
    let first_max = match attach {
        true => max.saturating_sub(descriptor(true, true, true).len().saturating_sub(3)),
        false => max,
    };
    let payloads = aggregate(frame, first_max.max(8), max.max(8));
    let last = payloads.len().saturating_sub(1);
    let out = payloads
        .into_iter()
        .enumerate()
        .map(|(i, mut payload)| {
            if attach && i == 0 {
                payload[0] |= N;
            }
            Av1Packet {
                payload,
                descriptor: descriptor(i == 0, i == last, attach && i == 0),
            }
        })
        .collect();
    n.frame_number = n.frame_number.wrapping_add(1);
    if layer.ends_picture() {
        n.pictures += 1;
    }
    out
}

/// A packet being filled: whether its first element continues an OBU, and
/// its elements.
struct Building {
    continues: bool,
    elements: Vec<Vec<u8>>,
}

impl Building {
    /// Bytes of the payload as it stands (the last element without its
    /// length), plus those a new element would add to the one before it.
    fn size_with_next(&self) -> usize {
        1 + self
            .elements
            .iter()
            .map(|e| leb128_len(e.len()) + e.len())
            .sum::<usize>()
    }

    fn finish(self, goes_on: bool) -> Vec<u8> {
        let count = self.elements.len();
        let z = if self.continues { Z } else { 0 };
        let y = if goes_on { Y } else { 0 };
        let mut p = vec![z | y | ((count as u8) << 4)];
        for (i, e) in self.elements.iter().enumerate() {
            if i + 1 < count {
                put_leb128(&mut p, e.len());
            }
            p.extend_from_slice(e);
        }
        p
    }

    /// The payload built so far, closed with `goes_on` (its last OBU
    /// continues in the next packet); the next one starts empty,
    /// continuing an OBU when `goes_on`.
    fn close(&mut self, goes_on: bool) -> Vec<u8> {
        let full = std::mem::replace(
            self,
            Building {
                continues: goes_on,
                elements: vec![],
            },
        );
        full.finish(goes_on)
    }
}

/// Most OBU elements per packet: W counts up to three (each but the last
/// with its length).
const MAX_ELEMENTS: usize = 3;

/// The frame's OBUs in payloads of at most `first_max` (the first) and
/// `max` bytes: temporal delimiters and tile lists dropped, `obu_size`
/// removed, OBUs fragmented across packets where they do not fit.
fn aggregate(frame: &[u8], first_max: usize, max: usize) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut cur = Building {
        continues: false,
        elements: vec![],
    };
    // Room for the aggregation header and a byte of an element at least.
    let (first_max, max) = (first_max.max(2), max.max(2));
    let cap = |out: &Vec<Vec<u8>>| if out.is_empty() { first_max } else { max };
    for obu in obus(frame) {
        if matches!(obu.kind(), OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST) {
            continue;
        }
        let mut element = vec![obu.header & !0x02];
        element.extend(obu.ext);
        element.extend_from_slice(obu.payload);
        let mut rest = &element[..];
        while !rest.is_empty() {
            let room = cap(&out).saturating_sub(cur.size_with_next());
            if cur.elements.len() == MAX_ELEMENTS || room == 0 {
                out.push(cur.close(false));
                continue;
            }
            let (take, tail) = rest.split_at(rest.len().min(room));
            cur.elements.push(take.to_vec());
            rest = tail;
            if !rest.is_empty() {
                // The OBU goes on in the next packet.
                out.push(cur.close(true));
            }
        }
    }
    if !cur.elements.is_empty() || out.is_empty() {
        out.push(cur.finish(false));
    }
    out
}

/// What a receiver reads from an AV1 payload alone (layers and frame
/// boundaries are the dependency descriptor's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadView {
    /// Z=0 and the first OBU can begin a frame.
    pub starts_frame: bool,
    /// N=1, or a sequence header followed by a KEY_FRAME frame header.
    pub keyframe: bool,
    /// The stamp after the frame header of a frame OBU that begins here.
    pub stamp: Option<Stamp>,
}

/// Read an RTP payload's aggregation header and the OBUs that begin in it
/// (None: cut short or malformed).
pub fn read_payload(p: &[u8]) -> Option<PayloadView> {
    let (&aggregation, mut rest) = p.split_first()?;
    let continues = aggregation & Z != 0;
    let count = usize::from((aggregation >> 4) & 0x03);
    let mut view = PayloadView {
        keyframe: aggregation & N != 0,
        ..PayloadView::default()
    };
    let mut sequence_header = false;
    let mut index = 0;
    while !rest.is_empty() {
        let element = if index + 1 == count {
            std::mem::take(&mut rest)
        } else {
            let (len, n) = read_leb128(rest)?;
            let (e, tail) = rest.get(n..)?.split_at_checked(len)?;
            rest = tail;
            e
        };
        let begins = index > 0 || !continues;
        index += 1;
        let Some(&header) = element.first().filter(|_| begins) else {
            continue;
        };
        let kind = (header >> 3) & 0x0f;
        if index == 1 {
            view.starts_frame = matches!(
                kind,
                OBU_SEQUENCE_HEADER | OBU_TEMPORAL_DELIMITER | OBU_FRAME_HEADER | OBU_FRAME
            );
        }
        let body = element.get(1 + usize::from(header & 0x04 != 0)..)?;
        match kind {
            OBU_SEQUENCE_HEADER => sequence_header = true,
            OBU_FRAME | OBU_FRAME_HEADER if view.stamp.is_none() => {
                // show_existing_frame 0, frame_type (2 bits) 0: KEY_FRAME.
                let key = body.first().is_some_and(|b| b & 0xe0 == 0);
                view.keyframe |= sequence_header && key;
                view.stamp = Stamp::decode_at(body, FRAME_HEADER);
            }
            _ => {}
        }
    }
    Some(view)
}

#[cfg(test)]
#[path = "av1_tests.rs"]
mod tests;
