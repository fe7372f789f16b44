//! A bound on log lines: a flood of bad handshakes must not fill the disk.
//!
//! At most [`LINES_PER_SECOND`] lines pass in any one-second window; the rest are counted
//! and reported as one summary line (by [`LogThrottle::take_suppressed`], called every second
//! by the endpoint). The counters (`stats.rs`) still count every handshake.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Lines allowed per one-second window.
pub const LINES_PER_SECOND: u32 = 20;

#[derive(Debug)]
pub struct LogThrottle {
    per_second: u32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    lines: u32,
    suppressed: u64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new(LINES_PER_SECOND)
    }
}

impl LogThrottle {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: Mutex::new(Window {
                start: Instant::now(),
                lines: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be logged now; if not, it is counted as suppressed.
    pub fn allow(&self) -> bool {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.lines = 0;
        }
        if w.lines < self.per_second {
            w.lines += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }

    /// Lines suppressed since the last call.
    pub fn take_suppressed(&self) -> u64 {
        std::mem::take(
            &mut self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .suppressed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_bound_are_counted_not_logged() {
        let t = LogThrottle::new(3);
        let allowed = (0..10).filter(|_| t.allow()).count();
        assert_eq!(allowed, 3);
        assert_eq!(t.take_suppressed(), 7);
        assert_eq!(t.take_suppressed(), 0);
    }
}
