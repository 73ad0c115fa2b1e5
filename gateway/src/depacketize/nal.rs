//! What the H264 and H265 payload formats share: a NAL unit rebuilt from fragmentation units
//! (FU-A, FU; AV1 keeps its OBU fragments the same way), and access units of 4-byte
//! length-prefixed NAL units with the parameter sets taken out for the sample entry.

use super::Damage;

/// A NAL unit being rebuilt from fragmentation units.
#[derive(Default)]
pub(super) struct Fragmented(Option<Vec<u8>>);

impl Fragmented {
    /// One fragmentation unit: `header` (called on a start) is the rebuilt NAL unit header,
    /// `data` the fragment. A complete unit goes to `units`.
    pub(super) fn push(
        &mut self,
        (start, end): (bool, bool),
        header: impl FnOnce() -> Vec<u8>,
        data: &[u8],
        units: &mut Vec<Vec<u8>>,
    ) -> Result<(), Damage> {
        if start {
            if self.0.is_some() {
                return Err(Damage::Incomplete); // the previous unit never ended
            }
            let mut nal = header();
            nal.extend_from_slice(data);
            self.0 = Some(nal);
        } else {
            self.0
                .as_mut()
                .ok_or(Damage::Incomplete)?
                .extend_from_slice(data);
        }
        if end && let Some(nal) = self.0.take() {
            units.push(nal);
        }
        Ok(())
    }

    /// The unit in progress, to be continued by the caller (AV1's Z bit).
    pub(super) fn take(&mut self) -> Option<Vec<u8>> {
        self.0.take()
    }

    /// Keeps a unit whose rest comes in the next packet (AV1's Y bit).
    pub(super) fn hold(&mut self, unit: Vec<u8>) {
        self.0 = Some(unit);
    }

    /// A unit is in progress: anything but its next fragment means its end was lost.
    pub(super) fn pending(&self) -> bool {
        self.0.is_some()
    }

    /// The frame ended: a unit still in progress lost its end.
    pub(super) fn end_frame(&mut self) -> Result<(), Damage> {
        match self.0.take() {
            Some(_) => Err(Damage::Incomplete),
            None => Ok(()),
        }
    }
}

/// The NAL units of an aggregation body (STAP-A, AP) to `units`; a unit cut short or failing
/// `valid` (its header) makes the packet malformed.
pub(super) fn aggregated(
    body: &[u8],
    valid: impl Fn(&[u8]) -> bool,
    units: &mut Vec<Vec<u8>>,
) -> Result<(), Damage> {
    for unit in relay_proto::aggregation_units(body) {
        match unit {
            Ok(nal) if valid(nal) => units.push(nal.to_vec()),
            _ => return Err(Damage::Malformed),
        }
    }
    Ok(())
}

/// What a NAL unit is to the MP4 sample.
pub(super) enum Role {
    /// Goes to the sample entry, in this slot of the parameter-set array.
    ParameterSet(usize),
    /// Means nothing in MP4 (delimiters, filler).
    Skip,
    /// Part of the sample; `keyframe` if it makes the access unit a random access point.
    Sample { keyframe: bool },
}

/// The sample bytes and keyframe flag of an access unit; parameter sets are stored in `params`.
/// `None` if nothing is left for the sample.
pub(super) fn access_unit(
    units: Vec<Vec<u8>>,
    params: &mut [Option<Vec<u8>>],
    role: impl Fn(&[u8]) -> Role,
) -> Option<(Vec<u8>, bool)> {
    let mut data = Vec::new();
    let mut keyframe = false;
    for nal in units {
        match role(&nal) {
            Role::ParameterSet(slot) => {
                if let Some(p) = params.get_mut(slot) {
                    *p = Some(nal);
                }
            }
            Role::Skip => {}
            Role::Sample { keyframe: k } => {
                keyframe |= k;
                data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                data.extend_from_slice(&nal);
            }
        }
    }
    (!data.is_empty()).then_some((data, keyframe))
}

/// All parameter sets, once each slot has been filled.
pub(super) fn complete(params: &[Option<Vec<u8>>]) -> Option<Vec<Vec<u8>>> {
    params.iter().cloned().collect()
}
