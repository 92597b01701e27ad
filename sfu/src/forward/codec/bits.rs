//! The bounded bit reader the codec parsers share: MSB-first fixed-width
//! reads (`f(n)` / `u(n)` in every spec this module's siblings cite), H.264 /
//! H.265 Exp-Golomb codes (ITU-T H.264 9.1, H.265 9.2) and, for NAL unit
//! payloads, removal of `emulation_prevention_three_byte` on the fly
//! (H.264 7.4.1, H.265 7.4.2), so reading an SPS does not allocate.
//!
//! Every read returns `None` once the data runs out; nothing here panics or
//! allocates.

/// MSB-first bit reader over a byte slice.
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    /// Index in `data` of the byte being read.
    byte: usize,
    /// Bits of `data[byte]` already read (0..8).
    bit: u32,
    /// Zero bytes immediately before `data[byte]` (RBSP mode only).
    zeros: u8,
    /// Whether a 0x03 after two zero bytes is skipped (NAL unit payloads).
    rbsp: bool,
}

impl<'a> Bits<'a> {
    /// Reads `data` as it is (VP9 uncompressed header, AV1 OBUs).
    pub(crate) fn new(data: &'a [u8]) -> Bits<'a> {
        Bits {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
            rbsp: false,
        }
    }

    /// Reads the RBSP inside a NAL unit payload (the bytes after the NAL
    /// unit header): emulation prevention bytes are skipped.
    pub(crate) fn rbsp(nal_payload: &'a [u8]) -> Bits<'a> {
        Bits {
            rbsp: true,
            ..Bits::new(nal_payload)
        }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.byte)?;
        let bit = (byte >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
            if self.rbsp {
                self.zeros = if byte == 0 {
                    self.zeros.saturating_add(1)
                } else {
                    0
                };
                if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                    self.byte += 1;
                    self.zeros = 0;
                }
            }
        }
        Some(u32::from(bit))
    }

    pub(crate) fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// `n` bits (at most 32) as an unsigned number.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        debug_assert!(n <= 32);
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// Skips `n` bits.
    pub(crate) fn skip(&mut self, n: u32) -> Option<()> {
        (0..n).try_for_each(|_| self.bit().map(|_| ()))
    }

    /// Unsigned Exp-Golomb, `ue(v)`.
    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    /// Signed Exp-Golomb, `se(v)`.
    pub(crate) fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let magnitude = k.div_ceil(2) as i32;
        Some(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_msb_first_and_stops_at_the_end() {
        let mut b = Bits::new(&[0b1010_0000, 0xff]);
        assert_eq!(b.bits(3), Some(0b101));
        assert_eq!(b.bits(13), Some(0x00ff));
        assert_eq!(b.bit(), None);
        assert_eq!(
            Bits::new(&[0x12, 0x34, 0x56, 0x78]).bits(32),
            Some(0x1234_5678)
        );
    }

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3, 4 (H.264 table 9-2).
        let mut b = Bits::new(&[0b1010_0110, 0b0100_0010, 0b1000_0000]);
        assert_eq!(b.ue(), Some(0));
        assert_eq!(b.ue(), Some(1));
        assert_eq!(b.se(), Some(-1));
        assert_eq!(b.se(), Some(2));
        assert_eq!(b.ue(), Some(4));
        // 32 leading zeros: longer than any u32 code.
        assert_eq!(Bits::new(&[0, 0, 0, 0, 0x80]).ue(), None);
    }

    #[test]
    fn rbsp_skips_emulation_prevention_bytes() {
        let escaped = [0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03];
        let mut b = Bits::rbsp(&escaped);
        let bytes: Vec<u32> = (0..10).map_while(|_| b.bits(8)).collect();
        assert_eq!(bytes, [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
        // Read as it is, the 0x03 bytes stay.
        assert_eq!(Bits::new(&escaped).bits(24), Some(0x03));
    }
}
