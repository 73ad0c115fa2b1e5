//! The body of an aggregation packet — H264 STAP-A (RFC 6184 §5.7.1) and H265 AP (RFC 7798
//! §4.4.2) share it: NAL units, each behind a 16-bit big-endian size. One walker serves the
//! keyframe classifiers, the H264 inspector and the recorder; each decides what a malformed
//! body means for it.

/// A size field that runs past the end of the packet (or a lone trailing byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedAggregate;

/// The NAL units of an aggregation body (the payload after the aggregation header). Yields
/// `Err` once and stops if the body is cut short; a zero size yields an empty unit.
pub fn aggregation_units(body: &[u8]) -> AggregationUnits<'_> {
    AggregationUnits { rest: body }
}

/// The NAL units of one aggregation body, in order; made by [`aggregation_units`].
pub struct AggregationUnits<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for AggregationUnits<'a> {
    type Item = Result<&'a [u8], MalformedAggregate>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some(&[hi, lo]) = rest.get(..2) else {
            return Some(Err(MalformedAggregate));
        };
        let size = usize::from(u16::from_be_bytes([hi, lo]));
        let Some(unit) = rest.get(2..2 + size) else {
            return Some(Err(MalformedAggregate));
        };
        self.rest = &rest[2 + size..];
        Some(Ok(unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_in_order_then_the_end() {
        let body = [0, 2, 0xaa, 0xbb, 0, 0, 0, 1, 0xcc];
        let units: Vec<_> = aggregation_units(&body).collect();
        assert_eq!(
            units,
            vec![Ok(&[0xaa, 0xbb][..]), Ok(&[][..]), Ok(&[0xcc][..])]
        );
    }

    #[test]
    fn a_cut_body_yields_one_error_and_stops() {
        let units: Vec<_> = aggregation_units(&[0, 5, 1, 2]).collect();
        assert_eq!(units, vec![Err(MalformedAggregate)]);
        let units: Vec<_> = aggregation_units(&[0, 1, 7, 9]).collect();
        assert_eq!(units, vec![Ok(&[7][..]), Err(MalformedAggregate)]);
        assert_eq!(aggregation_units(&[]).count(), 0);
    }
}
