//! The guessing throttle: wrong PINs, setup codes and links counted per source within a
//! sliding minute, each guess counted from the moment it begins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::{SharedClock, UnixMillis};

/// Counts failures (wrong PINs, setup codes, links) per source within a sliding minute
/// and tells when a source has used up its allowance.
pub struct GuessThrottle {
    limit: u32,
    clock: SharedClock,
    sources: Mutex<HashMap<IpAddr, Guesses>>,
}

/// One source's recent failures and the guesses it has under way.
#[derive(Default)]
struct Guesses {
    failures: Vec<UnixMillis>,
    in_flight: u32,
}

/// A guess under way (see [`GuessThrottle::begin`]): it counts against the source's
/// allowance until it is settled, as a failure with [`GuessAttempt::failed`] or, when
/// dropped, as no failure.
pub struct GuessAttempt<'a> {
    throttle: &'a GuessThrottle,
    source: IpAddr,
    settled: bool,
}

impl GuessAttempt<'_> {
    /// The guess was wrong; returns true when this failure used up the allowance.
    pub fn failed(mut self) -> bool {
        self.settled = true;
        self.throttle.settle(self.source, true)
    }
}

impl Drop for GuessAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.settle(self.source, false);
        }
    }
}

const WINDOW_MS: u64 = 60_000;
/// A source that hit the limit waits this long after its last failure.
const PENALTY_MS: u64 = GUESS_PENALTY_SECS * 1000;
/// The longest a throttled source waits (what `Retry-After` says).
pub const GUESS_PENALTY_SECS: u64 = 5 * 60;

impl GuessThrottle {
    pub fn new(limit_per_minute: u32, clock: SharedClock) -> Self {
        Self {
            limit: limit_per_minute,
            clock,
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Guesses>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a guess from `source`, or `None` when the source has used up its allowance.
    /// The guess counts from now on, so that guesses sent at once cannot all pass this
    /// check before the first of them has failed.
    pub fn begin(&self, source: IpAddr) -> Option<GuessAttempt<'_>> {
        let now = self.clock.now_ms();
        let mut sources = self.sources();
        let guesses = sources.entry(source).or_default();
        let penalised = guesses.failures.len() as u32 >= self.limit
            && guesses
                .failures
                .last()
                .is_some_and(|last| now < last + PENALTY_MS);
        if !penalised {
            guesses.failures.retain(|t| now < t + WINDOW_MS);
        }
        if penalised || guesses.failures.len() as u32 + guesses.in_flight >= self.limit {
            return None;
        }
        guesses.in_flight += 1;
        Some(GuessAttempt {
            throttle: self,
            source,
            settled: false,
        })
    }

    fn settle(&self, source: IpAddr, failed: bool) -> bool {
        let now = self.clock.now_ms();
        let mut sources = self.sources();
        let guesses = sources.entry(source).or_default();
        guesses.in_flight = guesses.in_flight.saturating_sub(1);
        let used_up = failed && Self::count_failure(guesses, now, self.limit);
        if guesses.failures.is_empty() && guesses.in_flight == 0 {
            sources.remove(&source);
        }
        used_up
    }

    /// Records a failure of a guess that was not begun here (sign-ins count per source
    /// without a check first); returns true when this failure used up the allowance.
    pub fn fail(&self, source: IpAddr) -> bool {
        let now = self.clock.now_ms();
        let mut sources = self.sources();
        // Bound memory under a flood from many sources.
        if sources.len() > 100_000 {
            sources.retain(|_, g| {
                g.in_flight > 0 || g.failures.last().is_some_and(|t| now < t + PENALTY_MS)
            });
        }
        Self::count_failure(sources.entry(source).or_default(), now, self.limit)
    }

    fn count_failure(guesses: &mut Guesses, now: UnixMillis, limit: u32) -> bool {
        guesses.failures.retain(|t| now < t + WINDOW_MS);
        guesses.failures.push(now);
        guesses.failures.len() as u32 == limit
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn throttle_blocks_at_the_limit_and_releases_after_the_penalty() {
        let clock = ManualClock::new(1_000_000);
        let throttle = GuessThrottle::new(3, Arc::new(clock.clone()));
        let ip: IpAddr = "198.18.0.7".parse().expect("ip");
        assert!(!throttle.fail(ip));
        assert!(!throttle.fail(ip));
        assert!(throttle.begin(ip).is_some());
        assert!(throttle.fail(ip));
        assert!(throttle.begin(ip).is_none());
        let other: IpAddr = "198.18.0.8".parse().expect("ip");
        assert!(throttle.begin(other).is_some());
        clock.advance_secs(299);
        assert!(throttle.begin(ip).is_none());
        clock.advance_secs(1);
        assert!(throttle.begin(ip).is_some());
    }

    #[test]
    fn guesses_sent_at_once_count_before_any_of_them_has_failed() {
        let clock = ManualClock::new(1_000_000);
        let throttle = GuessThrottle::new(3, Arc::new(clock.clone()));
        let ip: IpAddr = "198.18.0.7".parse().expect("ip");
        let under_way: Vec<_> = (0..3)
            .map(|_| throttle.begin(ip).expect("allowed"))
            .collect();
        assert!(
            throttle.begin(ip).is_none(),
            "a fourth at the same time is refused"
        );
        let used_up: Vec<bool> = under_way.into_iter().map(GuessAttempt::failed).collect();
        assert_eq!(used_up, [false, false, true]);
        assert!(
            throttle.begin(ip).is_none(),
            "penalised after the third failure"
        );
        // A guess that turns out right frees its place.
        let other: IpAddr = "198.18.0.8".parse().expect("ip");
        drop(throttle.begin(other).expect("allowed"));
        assert!(throttle.begin(other).is_some());
    }
}
