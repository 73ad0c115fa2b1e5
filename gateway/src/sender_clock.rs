//! A publisher's sender reports tie each layer's RTP time to its capture wallclock. Simulcast
//! layers have independent RTP timestamp offsets, so this mapping is the only way to tell, at a
//! layer switch, whether the target's keyframe is the picture the viewer has just been sent, an
//! older one, or a newer one. Arrival time cannot: a loaded publisher or gateway can deliver the
//! layers of one picture tens of milliseconds apart, and a viewer would get the picture twice.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Two layers' frames whose capture times are this close are one picture. Half a frame at 120 fps:
/// wider than sender-report rounding, narrower than any real frame interval.
pub const SAME_CAPTURE: Duration = Duration::from_millis(4);

/// The latest sender report of one track (RTP time ↔ wallclock), shared by every worker.
#[derive(Debug, Default)]
pub struct SenderClock {
    last: Mutex<Option<Mapping>>,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    rtp: u32,
    wallclock: SystemTime,
    rate: u32,
}

impl SenderClock {
    /// Take a sender report: `rtp` (as sent, 32 bits) was the RTP time at `wallclock`.
    pub fn update(&self, rtp: u32, wallclock: SystemTime, rate: u32) {
        if rate == 0 {
            return;
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Mapping {
                rtp,
                wallclock,
                rate,
            });
        }
    }

    /// The capture wallclock of a packet with this (extended) RTP time, once a report has come.
    /// RTP time wraps at 32 bits: the difference is taken as signed, so packets up to ~6 hours
    /// (at 90 kHz) either side of the report map correctly.
    pub fn capture_time(&self, rtp_time: u64) -> Option<SystemTime> {
        let m = (*self.last.lock().ok()?)?;
        let ticks = (rtp_time as u32).wrapping_sub(m.rtp) as i32;
        let offset = Duration::from_nanos(
            u64::from(ticks.unsigned_abs()) * 1_000_000_000 / u64::from(m.rate),
        );
        if ticks >= 0 {
            m.wallclock.checked_add(offset)
        } else {
            m.wallclock.checked_sub(offset)
        }
    }
}

/// What to do with a pending switch when the first packet of the target layer's keyframe arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchAt {
    /// The keyframe is not newer than the picture the viewer was last sent: switching at it would
    /// repeat or rewind. Wait for the next one (and ask for it).
    Skip,
    /// The frame held back on the current layer is this keyframe's picture (or a later one the
    /// target carries too): drop it and switch.
    DropHeld,
    /// The held frame is older: send it, then switch.
    FlushHeld,
}

/// Decide from capture times: `keyframe` on the target layer; `written`, the last frame sent to the
/// viewer; `held`, the current layer's frame held back while the switch is pending. None when the
/// capture times needed are unknown (no sender report yet on a layer): the caller falls back to
/// arrival times.
pub fn switch_at(
    keyframe: Option<SystemTime>,
    written: Option<SystemTime>,
    held: Option<SystemTime>,
) -> Option<SwitchAt> {
    let kf = keyframe?;
    if written.is_none() && held.is_none() {
        return None;
    }
    if let Some(w) = written
        && kf <= w + SAME_CAPTURE
    {
        return Some(SwitchAt::Skip);
    }
    Some(match held {
        Some(h) if kf <= h + SAME_CAPTURE => SwitchAt::DropHeld,
        _ => SwitchAt::FlushHeld,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
    }

    #[test]
    fn capture_time_follows_the_report_either_side_and_across_the_wrap() {
        let c = SenderClock::default();
        assert_eq!(c.capture_time(0), None);
        c.update(u32::MAX - 89, at(1000), 90_000);
        assert_eq!(c.capture_time(u64::from(u32::MAX - 89)), Some(at(1000)));
        // 90 ticks later is past the 32-bit wrap; the extended time carries the wrap in bit 32.
        assert_eq!(c.capture_time(1 << 32), Some(at(1001)));
        assert_eq!(
            c.capture_time(u64::from(u32::MAX - 89 - 900)),
            Some(at(990))
        );
        // A later report replaces the mapping.
        c.update(0, at(5000), 90_000);
        assert_eq!(c.capture_time(9000), Some(at(5100)));
    }

    #[test]
    fn layers_with_different_offsets_map_one_picture_to_one_time() {
        let high = SenderClock::default();
        let low = SenderClock::default();
        high.update(1_000_000, at(0), 90_000);
        low.update(7_777, at(0), 90_000);
        let frame = 3_000; // ticks after the report on both layers
        assert_eq!(
            high.capture_time(1_000_000 + frame),
            low.capture_time(7_777 + frame)
        );
    }

    #[test]
    fn a_rate_of_zero_is_ignored() {
        let c = SenderClock::default();
        c.update(0, at(0), 0);
        assert_eq!(c.capture_time(0), None);
    }

    #[test]
    fn switch_decisions() {
        // Nothing known: fall back.
        assert_eq!(switch_at(None, Some(at(0)), None), None);
        assert_eq!(switch_at(Some(at(0)), None, None), None);
        // The viewer was already sent this picture (the held frame was flushed before the target's
        // copy arrived), or a newer one: never repeat or rewind.
        assert_eq!(
            switch_at(Some(at(33)), Some(at(33)), None),
            Some(SwitchAt::Skip)
        );
        assert_eq!(
            switch_at(Some(at(33)), Some(at(66)), Some(at(100))),
            Some(SwitchAt::Skip)
        );
        // The held frame is the keyframe's picture, however late the target's copy arrived.
        assert_eq!(
            switch_at(Some(at(66)), Some(at(33)), Some(at(66))),
            Some(SwitchAt::DropHeld)
        );
        // Sender-report rounding is tolerated.
        assert_eq!(
            switch_at(Some(at(68)), Some(at(33)), Some(at(66))),
            Some(SwitchAt::DropHeld)
        );
        // A keyframe between the last sent and the held frame (the current layer skips frames the
        // target carries): switch there; the target carries the held picture too.
        assert_eq!(
            switch_at(Some(at(50)), Some(at(33)), Some(at(66))),
            Some(SwitchAt::DropHeld)
        );
        // A newer keyframe: the held frame goes out first.
        assert_eq!(
            switch_at(Some(at(100)), Some(at(33)), Some(at(66))),
            Some(SwitchAt::FlushHeld)
        );
        assert_eq!(
            switch_at(Some(at(100)), Some(at(66)), None),
            Some(SwitchAt::FlushHeld)
        );
    }
}
