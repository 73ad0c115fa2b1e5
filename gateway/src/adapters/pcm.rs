//! PCM and Opus for the WebSocket adapters (sans-IO: bytes in, frames out). Calls' format both
//! ways is 48 kHz stereo 16-bit little-endian PCM; WebRTC's is Opus, 20 ms per packet. Ingest
//! buffers what the service sends (it may send faster than real time: a TTS engine) and hands
//! out one 20 ms frame per tick; egress decodes each Opus packet to PCM.

use std::collections::VecDeque;

use opus_rs::{Application, OpusDecoder, OpusEncoder};

/// Calls' PCM sample rate, Hz (also Opus's).
pub const SAMPLE_RATE: u32 = 48_000;
/// Calls' PCM is stereo.
pub const CHANNELS: usize = 2;
/// Samples per channel in 20 ms.
pub const FRAME_SAMPLES: usize = 960;
/// PCM bytes in 20 ms: 960 samples × 2 channels × 2 bytes.
pub const FRAME_BYTES: usize = FRAME_SAMPLES * CHANNELS * 2;
/// Ingest buffers at most this much audio (a minute); what comes beyond it is dropped, counted.
pub const MAX_BUFFERED_BYTES: usize = 60 * 50 * FRAME_BYTES;

/// The service's PCM into 20 ms Opus packets.
pub struct PcmToOpus {
    encoder: OpusEncoder,
    buffered: VecDeque<u8>,
    /// PCM bytes dropped over [`MAX_BUFFERED_BYTES`].
    pub dropped_bytes: u64,
}

impl PcmToOpus {
    /// An encoder at 64 kbit/s, with nothing buffered.
    pub fn new() -> Result<PcmToOpus, &'static str> {
        let mut encoder = OpusEncoder::new(SAMPLE_RATE as i32, CHANNELS, Application::Audio)?;
        encoder.bitrate_bps = 64_000;
        Ok(PcmToOpus {
            encoder,
            buffered: VecDeque::new(),
            dropped_bytes: 0,
        })
    }

    /// PCM bytes from the service (any length; an odd trailing byte waits for its pair).
    pub fn push(&mut self, pcm: &[u8]) {
        let room = MAX_BUFFERED_BYTES.saturating_sub(self.buffered.len());
        let take = pcm.len().min(room);
        self.buffered.extend(&pcm[..take]);
        self.dropped_bytes += (pcm.len() - take) as u64;
    }

    /// Audio waiting, in 20 ms frames.
    pub fn buffered_frames(&self) -> usize {
        self.buffered.len() / FRAME_BYTES
    }

    /// The next 20 ms as one Opus packet, once a whole frame is buffered.
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        if self.buffered.len() < FRAME_BYTES {
            return None;
        }
        let samples: Vec<i16> = self
            .buffered
            .drain(..FRAME_BYTES)
            .collect::<Vec<u8>>()
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut out = vec![0u8; 1500];
        let n = self
            .encoder
            .encode_i16(&samples, FRAME_SAMPLES, &mut out)
            .ok()?;
        out.truncate(n);
        Some(out)
    }
}

/// Opus packets into the service's PCM.
pub struct OpusToPcm {
    decoder: OpusDecoder,
    pcm: Vec<f32>,
}

impl OpusToPcm {
    /// A decoder to 48 kHz stereo.
    pub fn new() -> Result<OpusToPcm, &'static str> {
        Ok(OpusToPcm {
            decoder: OpusDecoder::new(SAMPLE_RATE as i32, CHANNELS)?,
            // Up to 120 ms per packet, the longest Opus allows.
            pcm: vec![0.0; 6 * FRAME_SAMPLES * CHANNELS],
        })
    }

    /// One Opus packet as s16le interleaved stereo; None if it does not decode.
    pub fn decode(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let samples = self
            .decoder
            .decode(packet, 6 * FRAME_SAMPLES, &mut self.pcm)
            .ok()?;
        let mut out = Vec::with_capacity(samples * CHANNELS * 2);
        for s in self.pcm.iter().take(samples * CHANNELS) {
            let v = (s.clamp(-1.0, 1.0) * 32767.0) as i16;
            out.extend_from_slice(&v.to_le_bytes());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 440 Hz at half scale, stereo s16le, `ms` long.
    fn tone(ms: usize) -> Vec<u8> {
        let n = SAMPLE_RATE as usize * ms / 1000;
        let mut out = Vec::with_capacity(n * 4);
        for i in 0..n {
            let v = ((i as f32 * 440.0 * std::f32::consts::TAU / SAMPLE_RATE as f32).sin()
                * 16000.0) as i16;
            out.extend_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn rms(pcm: &[u8]) -> f64 {
        let s: Vec<f64> = pcm
            .chunks_exact(2)
            .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
            .collect();
        (s.iter().map(|v| v * v).sum::<f64>() / s.len().max(1) as f64).sqrt()
    }

    #[test]
    fn a_tone_survives_opus_both_ways() {
        let mut enc = PcmToOpus::new().expect("encoder");
        // Sent in odd-sized pieces, as a service may.
        for chunk in tone(400).chunks(1001) {
            enc.push(chunk);
        }
        assert_eq!(enc.buffered_frames(), 20);
        let mut dec = OpusToPcm::new().expect("decoder");
        let mut out = Vec::new();
        while let Some(p) = enc.next_packet() {
            assert!(!p.is_empty() && p.len() < 1500);
            let pcm = dec.decode(&p).expect("decodes");
            assert_eq!(pcm.len(), FRAME_BYTES);
            out.extend(pcm);
        }
        assert_eq!(out.len(), 20 * FRAME_BYTES);
        // After the codec's start-up, the tone is there at about its level (16000 peak: 11314 RMS).
        let level = rms(&out[10 * FRAME_BYTES..]);
        assert!(level > 8000.0 && level < 14000.0, "rms {level}");
        assert!(enc.next_packet().is_none(), "no partial frame");
    }

    #[test]
    fn ingest_is_bounded() {
        let mut enc = PcmToOpus::new().expect("encoder");
        enc.push(&vec![0u8; MAX_BUFFERED_BYTES + 10]);
        assert_eq!(enc.dropped_bytes, 10);
        // Garbage from a publisher decodes to something or nothing, never a panic.
        let _ = OpusToPcm::new().expect("decoder").decode(&[0xff; 3]);
    }
}
