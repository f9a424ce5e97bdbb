//! The operating system's clocks and random number generator, for the core's
//! [`Env`]: this is the shell's side of "time and randomness are passed in".

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::env::Env;

/// The system [`Env`]: `SystemTime` for the wall clock, `Instant` (from the moment it was
/// made) for the monotonic clock, and ring's `SystemRandom` (the kernel's CSPRNG).
pub struct SystemEnv {
    origin: Instant,
    rng: ring::rand::SystemRandom,
}

impl SystemEnv {
    /// The system clocks; the monotonic clock starts at zero now.
    pub fn new() -> SystemEnv {
        SystemEnv {
            origin: Instant::now(),
            rng: ring::rand::SystemRandom::new(),
        }
    }
}

impl Default for SystemEnv {
    fn default() -> SystemEnv {
        SystemEnv::new()
    }
}

impl Env for SystemEnv {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn fill_random(&self, buf: &mut [u8]) -> bool {
        ring::rand::SecureRandom::fill(&self.rng, buf).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_env_reads_the_real_clocks_and_generator() {
        let e = SystemEnv::new();
        // After 2020-01-01 and not in the far future: the wall clock, in milliseconds.
        let now = e.now_ms();
        assert!(
            (1_577_836_800_000..32_503_680_000_000).contains(&now),
            "{now}"
        );
        let (a, b) = (e.monotonic(), e.monotonic());
        assert!(b >= a);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        assert!(e.fill_random(&mut x) && e.fill_random(&mut y));
        assert_ne!(x, y);
    }
}
