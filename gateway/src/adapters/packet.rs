//! The WebSocket adapters' binary message, as Calls sends and reads it: a protobuf
//! `Packet { uint32 sequenceNumber = 1; uint32 timestamp = 2; bytes payload = 5; }` whose payload
//! is PCM (or a JPEG). Three fields do not need a protobuf library: encoded by hand, decoded by a
//! reader that skips fields it does not know and refuses anything malformed (sans-IO, fuzzable).

/// One adapter message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    /// Message sequence number (field 1).
    pub sequence_number: u32,
    /// Media timestamp (field 2); egress sends the Opus track's RTP time (48 kHz).
    pub timestamp: u32,
    /// PCM samples, or a JPEG (field 5).
    pub payload: Vec<u8>,
}

/// Why bytes are not a `Packet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The message ends inside a field.
    #[error("the message ends inside a field")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("a varint longer than 10 bytes")]
    Varint,
    /// A wire type this message never uses.
    #[error("a wire type this message never uses")]
    WireType,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, PacketError> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let b = *bytes.get(*at).ok_or(PacketError::Truncated)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift.min(63);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(PacketError::Varint)
}

impl Packet {
    /// The protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 16);
        out.push(0x08);
        put_varint(&mut out, self.sequence_number.into());
        out.push(0x10);
        put_varint(&mut out, self.timestamp.into());
        out.push(0x2a);
        put_varint(&mut out, self.payload.len() as u64);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads a message, skipping unknown fields; refuses malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Packet, PacketError> {
        let mut p = Packet::default();
        let mut at = 0;
        while at < bytes.len() {
            let key = varint(bytes, &mut at)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    let v = varint(bytes, &mut at)?;
                    match field {
                        1 => p.sequence_number = v as u32,
                        2 => p.timestamp = v as u32,
                        _ => {}
                    }
                }
                2 => {
                    let len = usize::try_from(varint(bytes, &mut at)?)
                        .map_err(|_| PacketError::Truncated)?;
                    let end = at.checked_add(len).ok_or(PacketError::Truncated)?;
                    let value = bytes.get(at..end).ok_or(PacketError::Truncated)?;
                    if field == 5 {
                        p.payload = value.to_vec();
                    }
                    at = end;
                }
                1 => {
                    at = at
                        .checked_add(8)
                        .filter(|e| *e <= bytes.len())
                        .ok_or(PacketError::Truncated)?
                }
                5 => {
                    at = at
                        .checked_add(4)
                        .filter(|e| *e <= bytes.len())
                        .ok_or(PacketError::Truncated)?
                }
                _ => return Err(PacketError::WireType),
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = Packet {
            sequence_number: 300,
            timestamp: u32::MAX,
            payload: vec![7; 3840],
        };
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
        assert_eq!(Packet::decode(&[]), Ok(Packet::default()));
    }

    #[test]
    fn known_bytes_and_unknown_fields() {
        // seq 1, ts 2, an unknown varint field 3 = 5, an unknown fixed32 field 4, payload "hi".
        let bytes = [
            0x08, 1, 0x10, 2, 0x18, 5, 0x25, 0, 0, 0, 0, 0x2a, 2, b'h', b'i',
        ];
        let p = Packet::decode(&bytes).expect("valid");
        assert_eq!((p.sequence_number, p.timestamp), (1, 2));
        assert_eq!(p.payload, b"hi");
    }

    #[test]
    fn malformed_is_refused_not_panicked_on() {
        assert_eq!(Packet::decode(&[0x2a, 5, 1]), Err(PacketError::Truncated));
        assert_eq!(Packet::decode(&[0x08]), Err(PacketError::Truncated));
        assert_eq!(
            Packet::decode(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(PacketError::Varint)
        );
        assert_eq!(Packet::decode(&[0x0b]), Err(PacketError::WireType));
        assert_eq!(
            Packet::decode(&[0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(PacketError::Truncated)
        );
    }
}
