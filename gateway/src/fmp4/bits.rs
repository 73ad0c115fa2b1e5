//! A big-endian bit reader for the headers sample entries are built from (H264/H265 SPS, the
//! AV1 sequence header), with the variable-length codes they use. Every read is checked: a
//! header cut short yields `None`, never a panic.

pub(super) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8]) -> Bits<'a> {
        Bits { data, pos: 0 }
    }

    pub(super) fn bit(&mut self) -> Option<u32> {
        let b = self.data.get(self.pos / 8)?;
        let v = (b >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(v))
    }

    pub(super) fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// `n` ≤ 32 bits as an unsigned number.
    pub(super) fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    pub(super) fn skip(&mut self, n: usize) -> Option<()> {
        self.pos = self.pos.checked_add(n)?;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    /// Leading zero bits then a 1, as counted by exp-Golomb and AV1's `uvlc`.
    fn leading_zeros(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(zeros)
    }

    /// Unsigned exp-Golomb, `ue(v)` of H264/H265 (and AV1's `uvlc`, which is the same code).
    pub(super) fn ue(&mut self) -> Option<u32> {
        let zeros = self.leading_zeros()?;
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    /// Signed exp-Golomb, `se(v)`.
    pub(super) fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        })
    }
}

/// The RBSP of a NAL unit payload: emulation prevention bytes (`00 00 03`) removed.
pub(super) fn rbsp(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_bounds() {
        // 1 | 010 | 011 | 00100 | 1: ue 0, 1, 2, 3 then a bit.
        let mut r = Bits::new(&[0b1010_0110, 0b0100_1000]);
        assert_eq!(
            (r.ue(), r.ue(), r.ue(), r.ue()),
            (Some(0), Some(1), Some(2), Some(3))
        );
        assert_eq!(r.bit(), Some(1));
        assert_eq!(r.bits(3), Some(0));
        assert_eq!(r.bit(), None);
        assert_eq!(Bits::new(&[0b0100_0000]).se(), Some(1));
        assert_eq!(Bits::new(&[0b0110_0000]).se(), Some(-1));
        assert_eq!(Bits::new(&[0, 0, 0, 0, 0]).ue(), None);
        assert_eq!(Bits::new(&[0xff]).skip(9), None);
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
