//! The streaming decoder for the control stream. A QUIC stream delivers bytes in chunks cut anywhere (one byte,
//! half a frame, three frames and a bit), so the decoder buffers the unfinished tail and hands out complete
//! messages one at a time.
//!
//! Memory is bounded by the protocol, not by the peer: a length prefix is checked the moment its four bytes
//! are in, before anything is reserved for the frame, so the buffer never holds more than one frame
//! ([`MAX_CONTROL_MESSAGE_LEN`] + 4) plus the chunk being pushed, as long as the caller drains with
//! [`ControlDecoder::next_message`] after each push.
//!
//! Errors are fatal and sticky: after the first one the decoder drops its buffer and every later call returns
//! the same error, because once framing is lost nothing after it can be trusted, and the caller is expected to
//! close the link. Each error is counted once in [`DecodeStats`].

use bytes::{Buf, BytesMut};

use super::MAX_CONTROL_MESSAGE_LEN;
use super::control::{ControlMessage, FRAME_HEADER_LEN};
use super::error::DecodeError;

/// Counters of one link's control stream, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Messages decoded and returned.
    pub messages: u64,
    /// Bytes of complete frames consumed (returned and skipped).
    pub bytes: u64,
    /// Frames of a type this build does not know, skipped (forward compatibility).
    pub unknown_type: u64,
    /// Fatal: a frame that did not parse, an empty frame, or a stream ending inside a frame.
    pub malformed: u64,
    /// Fatal: a length prefix or a count over the protocol's limits.
    pub oversized: u64,
}

/// Reassembles control messages from stream chunks. See the module docs for the bounds and error policy.
#[derive(Debug, Default)]
pub struct ControlDecoder {
    buf: BytesMut,
    stats: DecodeStats,
    failed: Option<DecodeError>,
}

impl ControlDecoder {
    /// A decoder with an empty buffer and zeroed counters.
    pub fn new() -> ControlDecoder {
        ControlDecoder::default()
    }

    /// Appends a chunk as the stream delivered it. Ignored after an error (the link is being closed).
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. Frames of unknown type are skipped
    /// (and counted) without being returned.
    pub fn next_message(&mut self) -> Result<Option<ControlMessage>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        loop {
            let Some(prefix) = self.buf.get(..4) else {
                return Ok(None);
            };
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            if len == 0 {
                return Err(self.fail(DecodeError::EmptyFrame));
            }
            if len as usize > MAX_CONTROL_MESSAGE_LEN {
                return Err(self.fail(DecodeError::Oversized {
                    len,
                    max: MAX_CONTROL_MESSAGE_LEN as u32,
                }));
            }
            let frame_len = 4 + len as usize;
            let Some(frame) = self.buf.get(..frame_len) else {
                return Ok(None);
            };
            let decoded = ControlMessage::decode_body(frame[4], &frame[FRAME_HEADER_LEN..]);
            match decoded {
                Err(err) => return Err(self.fail(err)),
                Ok(msg) => {
                    self.buf.advance(frame_len);
                    self.stats.bytes += frame_len as u64;
                    match msg {
                        Some(msg) => {
                            self.stats.messages += 1;
                            return Ok(Some(msg));
                        }
                        None => self.stats.unknown_type += 1,
                    }
                }
            }
        }
    }

    /// Pushes a chunk and drains every complete message into `out`: the usual call per stream read. Messages
    /// before an error in the same chunk are still delivered in `out`.
    pub fn decode(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<ControlMessage>,
    ) -> Result<(), DecodeError> {
        self.push(chunk);
        while let Some(msg) = self.next_message()? {
            out.push(msg);
        }
        Ok(())
    }

    /// Call when the peer finished the stream: bytes of an unfinished frame mean it was cut off mid-message.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            let buffered = self.buf.len();
            Err(self.fail(DecodeError::Truncated { buffered }))
        }
    }

    /// Bytes of an unfinished frame currently held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// This control stream's counters so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Whether a fatal error has been seen (the link should be closed).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    fn fail(&mut self, err: DecodeError) -> DecodeError {
        match err {
            DecodeError::Oversized { .. } | DecodeError::TooMany { .. } => {
                self.stats.oversized += 1;
            }
            DecodeError::EmptyFrame
            | DecodeError::Malformed { .. }
            | DecodeError::Truncated { .. } => self.stats.malformed += 1,
        }
        // Nothing after a framing error means anything; drop it (and its memory) now.
        self.buf = BytesMut::new();
        self.failed = Some(err.clone());
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testkit::{Rng, key, one_of_each};
    use crate::link::{CloseCode, Hello};

    fn encode_all(msgs: &[ControlMessage]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for msg in msgs {
            msg.encode(&mut out).unwrap();
        }
        out.to_vec()
    }

    fn drain(decoder: &mut ControlDecoder) -> Vec<ControlMessage> {
        let mut out = Vec::new();
        while let Some(msg) = decoder.next_message().unwrap() {
            out.push(msg);
        }
        out
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        let msgs = one_of_each();
        let bytes = encode_all(&msgs);
        let mut decoder = ControlDecoder::new();
        let mut out = Vec::new();
        decoder.decode(&bytes, &mut out).unwrap();
        assert_eq!(out, msgs);
        assert_eq!(decoder.buffered(), 0);
        decoder.finish().unwrap();
        assert_eq!(
            decoder.stats(),
            DecodeStats {
                messages: msgs.len() as u64,
                bytes: bytes.len() as u64,
                ..DecodeStats::default()
            }
        );
    }

    #[test]
    fn one_byte_at_a_time() {
        let msgs = one_of_each();
        let bytes = encode_all(&msgs);
        let mut decoder = ControlDecoder::new();
        let mut out = Vec::new();
        let mut boundaries = Vec::new();
        for (i, byte) in bytes.iter().enumerate() {
            let before = out.len();
            decoder
                .decode(std::slice::from_ref(byte), &mut out)
                .unwrap();
            if out.len() != before {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(out, msgs);
        // Each message came out exactly when its last byte arrived, never earlier.
        let mut expected = Vec::new();
        let mut end = 0;
        for msg in &msgs {
            end += msg.to_bytes().unwrap().len();
            expected.push(end);
        }
        assert_eq!(boundaries, expected);
    }

    #[test]
    fn random_chunking_gives_the_same_messages() {
        let msgs = one_of_each();
        let bytes = encode_all(&msgs);
        let mut rng = Rng::new(42);
        for _ in 0..200 {
            let mut decoder = ControlDecoder::new();
            let mut out = Vec::new();
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(64) as u64) as usize;
                let (chunk, tail) = rest.split_at(n);
                decoder.decode(chunk, &mut out).unwrap();
                rest = tail;
            }
            assert_eq!(out, msgs);
        }
    }

    #[test]
    fn every_truncation_yields_nothing_and_finish_reports_it() {
        for msg in one_of_each() {
            let frame = msg.to_bytes().unwrap();
            for cut in 0..frame.len() {
                let mut decoder = ControlDecoder::new();
                decoder.push(&frame[..cut]);
                assert_eq!(decoder.next_message(), Ok(None), "{msg:?} cut at {cut}");
                assert_eq!(decoder.stats().messages, 0);
                if cut == 0 {
                    assert_eq!(decoder.finish(), Ok(()));
                } else {
                    assert_eq!(
                        decoder.finish(),
                        Err(DecodeError::Truncated { buffered: cut })
                    );
                    assert_eq!(decoder.stats().malformed, 1);
                }
            }
        }
    }

    #[test]
    fn oversized_prefix_is_refused_without_buffering_the_frame() {
        // Refused as soon as the prefix is complete, without waiting for (or reserving) the claimed 4 GiB.
        let mut decoder = ControlDecoder::new();
        decoder.push(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            decoder.next_message(),
            Err(DecodeError::Oversized {
                len: u32::MAX,
                max: 65536
            })
        );
        assert_eq!(decoder.stats().oversized, 1);
        // Sticky: more input is ignored, the error repeats, and is counted once.
        decoder.push(&[0; 4096]);
        assert_eq!(decoder.buffered(), 0);
        assert!(decoder.next_message().is_err());
        assert!(decoder.finish().is_err());
        assert_eq!(decoder.stats().oversized, 1);
        assert!(decoder.is_failed());
    }

    #[test]
    fn a_large_valid_prefix_reserves_nothing_until_bytes_arrive() {
        let mut decoder = ControlDecoder::new();
        decoder.push(&(MAX_CONTROL_MESSAGE_LEN as u32).to_be_bytes());
        decoder.push(&[0x7f, 1, 2]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.buffered(), 7);
        assert!(
            decoder.buf.capacity() < 1024,
            "capacity {} grew with the claim, not the data",
            decoder.buf.capacity()
        );
    }

    #[test]
    fn prefix_at_the_limit_is_accepted_and_one_above_refused() {
        // A frame of exactly the maximum length, of an unknown type: skipped, counted.
        let mut frame = (MAX_CONTROL_MESSAGE_LEN as u32).to_be_bytes().to_vec();
        frame.push(0x7f);
        frame.resize(4 + MAX_CONTROL_MESSAGE_LEN, 0xaa);
        frame.extend_from_slice(&ControlMessage::HelloAck.to_bytes().unwrap());
        let mut decoder = ControlDecoder::new();
        decoder.push(&frame);
        assert_eq!(decoder.next_message(), Ok(Some(ControlMessage::HelloAck)));
        assert_eq!(decoder.stats().unknown_type, 1);

        let mut decoder = ControlDecoder::new();
        decoder.push(&(MAX_CONTROL_MESSAGE_LEN as u32 + 1).to_be_bytes());
        assert!(matches!(
            decoder.next_message(),
            Err(DecodeError::Oversized { len: 65537, .. })
        ));
    }

    #[test]
    fn unknown_types_are_skipped_and_counted() {
        let mut bytes = vec![0, 0, 0, 4, 0x99, 1, 2, 3]; // unknown type with a 3-byte body
        bytes.extend_from_slice(&[0, 0, 0, 1, 0x00]); // type 0 is reserved, also unknown
        bytes.extend_from_slice(&ControlMessage::Ping { t: 5 }.to_bytes().unwrap());
        let mut decoder = ControlDecoder::new();
        let mut out = Vec::new();
        decoder.decode(&bytes, &mut out).unwrap();
        assert_eq!(out, vec![ControlMessage::Ping { t: 5 }]);
        assert_eq!(decoder.stats().unknown_type, 2);
        assert_eq!(decoder.stats().messages, 1);
        assert_eq!(decoder.stats().bytes, bytes.len() as u64);
    }

    #[test]
    fn empty_frame_is_malformed() {
        let mut decoder = ControlDecoder::new();
        decoder.push(&[0, 0, 0, 0]);
        assert_eq!(decoder.next_message(), Err(DecodeError::EmptyFrame));
        assert_eq!(decoder.stats().malformed, 1);
    }

    #[test]
    fn malformed_body_is_fatal_but_earlier_messages_are_delivered() {
        let mut bytes = ControlMessage::HelloAck.to_bytes().unwrap().to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 3, 0x04, 1, 2]); // Ping with a 2-byte t
        bytes.extend_from_slice(&ControlMessage::HelloAck.to_bytes().unwrap());
        let mut decoder = ControlDecoder::new();
        let mut out = Vec::new();
        let err = decoder.decode(&bytes, &mut out).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Malformed {
                msg_type: 0x04,
                what: "ping t"
            }
        );
        assert_eq!(out, vec![ControlMessage::HelloAck]);
        assert_eq!(decoder.stats().malformed, 1);
        assert_eq!(decoder.stats().messages, 1);
    }

    #[test]
    fn count_over_bound_counts_as_oversized() {
        let mut body = vec![0, 0, 0, 1]; // channel
        body.extend_from_slice(&600u16.to_be_bytes()); // 600 NACK blocks
        let mut bytes = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        bytes.push(0x15);
        bytes.extend_from_slice(&body);
        let mut decoder = ControlDecoder::new();
        decoder.push(&bytes);
        assert!(matches!(
            decoder.next_message(),
            Err(DecodeError::TooMany { count: 600, .. })
        ));
        assert_eq!(decoder.stats().oversized, 1);
    }

    /// Random bytes, random frames of known types with random bodies, and mutated valid streams: nothing may
    /// panic, and anything that does decode must be a message that re-encodes and decodes to itself (so the
    /// decoder never produces a value the encoder would refuse).
    #[test]
    fn garbage_never_panics() {
        let valid = encode_all(&one_of_each());
        let types = [
            0x01u8, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20, 0x21, 0x22,
            0x23,
        ];
        let mut rng = Rng::new(0xdead_beef);
        let mut decoded = 0;
        for i in 0..10_000 {
            let bytes: Vec<u8> = match i % 3 {
                0 => (0..rng.below(300)).map(|_| rng.byte()).collect(),
                1 => {
                    let body_len = rng.below(120) as usize;
                    let mut frame = ((body_len + 1) as u32).to_be_bytes().to_vec();
                    frame.push(types[rng.below(types.len() as u64) as usize]);
                    // Small bytes make plausible lengths, counts and tags more likely.
                    frame.extend((0..body_len).map(|_| rng.byte() % 24));
                    frame
                }
                _ => {
                    let mut bytes = valid.clone();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.byte();
                    }
                    bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
                    bytes
                }
            };
            let mut decoder = ControlDecoder::new();
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len() as u64) as usize;
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                decoder.push(chunk);
                while let Ok(Some(msg)) = decoder.next_message() {
                    decoded += 1;
                    let again = msg.to_bytes().expect("decoded message re-encodes");
                    let mut check = ControlDecoder::new();
                    check.push(&again);
                    assert_eq!(check.next_message(), Ok(Some(msg)));
                }
            }
            let _ = decoder.finish();
            assert!(decoder.buffered() <= 4 + MAX_CONTROL_MESSAGE_LEN);
        }
        // The generator must reach the message parsers, not just the framing.
        assert!(decoded > 1000, "only {decoded} messages decoded");
    }

    #[test]
    fn a_conversation() {
        // Hello both ways, subscribe, nack: what a real link's first moments look like.
        let mut parent = ControlDecoder::new();
        let mut child = ControlDecoder::new();
        let child_hello = Hello::new("edge-1", 0, "prod");
        let parent_hello = Hello::new("relay-1", 1, "prod");
        parent.push(
            &ControlMessage::Hello(child_hello.clone())
                .to_bytes()
                .unwrap(),
        );
        child.push(
            &ControlMessage::Hello(parent_hello.clone())
                .to_bytes()
                .unwrap(),
        );
        let from_child = drain(&mut parent);
        let from_parent = drain(&mut child);
        let [ControlMessage::Hello(seen_by_parent)] = from_child.as_slice() else {
            panic!("{from_child:?}")
        };
        let [ControlMessage::Hello(seen_by_child)] = from_parent.as_slice() else {
            panic!("{from_parent:?}")
        };
        assert_eq!(seen_by_parent, &child_hello);
        assert_eq!(parent_hello.accept(seen_by_parent), Ok(()));
        assert_eq!(child_hello.accept(seen_by_child), Ok(()));
        parent.push(
            &ControlMessage::Subscribe {
                track: key("video"),
            }
            .to_bytes()
            .unwrap(),
        );
        parent.push(
            &ControlMessage::Close {
                code: CloseCode::Shutdown,
                reason: String::new(),
            }
            .to_bytes()
            .unwrap(),
        );
        assert_eq!(drain(&mut parent).len(), 2);
    }
}
