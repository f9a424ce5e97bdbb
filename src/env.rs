//! Time and randomness, passed in: the core (router, session, SASL) reads the clocks and
//! the random number generator only through an [`Env`], so it does no IO of its own
//! (docs/architecture.md, issue 11). The operating system's implementation is
//! `system::SystemEnv`, in the shell; tests and fuzz targets can use the deterministic
//! [`FakeEnv`].

use std::cell::Cell;
use std::time::Duration;

/// The clocks and the random number generator the core uses.
pub trait Env {
    /// Wall-clock milliseconds since the Unix epoch (pub-sub timestamps, expiry, caps);
    /// 0 if the clock is before the epoch.
    fn now_ms(&self) -> u64;

    /// Monotonic time since an origin fixed by this `Env` (durations only: storage-fault
    /// log windows). Never goes backwards.
    fn monotonic(&self) -> Duration;

    /// Fills `buf` with cryptographically secure random bytes; false if no randomness is
    /// available (`buf`'s content is then unspecified).
    fn fill_random(&self, buf: &mut [u8]) -> bool;
}

/// A deterministic [`Env`] for tests and fuzzing: clocks that move only when told
/// ([`FakeEnv::advance`]), and a seeded pseudo-random generator (splitmix64).
///
/// **Not secure**: its "randomness" is predictable. The daemon uses `system::SystemEnv`.
#[derive(Debug)]
pub struct FakeEnv {
    now_ms: Cell<u64>,
    monotonic: Cell<Duration>,
    state: Cell<u64>,
    random_works: Cell<bool>,
}

impl FakeEnv {
    /// Wall clock at `now_ms`, monotonic clock at zero, generator seeded with `seed`.
    pub fn new(now_ms: u64, seed: u64) -> FakeEnv {
        FakeEnv {
            now_ms: Cell::new(now_ms),
            monotonic: Cell::new(Duration::ZERO),
            state: Cell::new(seed),
            random_works: Cell::new(true),
        }
    }

    /// Moves both clocks forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.set(self.now_ms.get().saturating_add(ms));
        self.monotonic.set(self.monotonic.get().saturating_add(d));
    }

    /// Makes [`Env::fill_random`] fail (`false`) or work again.
    pub fn set_random_works(&self, works: bool) {
        self.random_works.set(works);
    }

    fn next_u64(&self) -> u64 {
        // splitmix64 (Steele, Lea, Flood 2014).
        let s = self.state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Default for FakeEnv {
    /// 2024-01-01T00:00:00Z, seed 0.
    fn default() -> FakeEnv {
        FakeEnv::new(1_704_067_200_000, 0)
    }
}

impl Env for FakeEnv {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn monotonic(&self) -> Duration {
        self.monotonic.get()
    }

    fn fill_random(&self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(8) {
            let n = chunk.len();
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..n]);
        }
        self.random_works.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_env_is_deterministic_per_seed_and_distinct_across_calls() {
        let (a, b, c) = (FakeEnv::new(0, 7), FakeEnv::new(0, 7), FakeEnv::new(0, 8));
        let (mut x, mut y, mut z) = ([0u8; 13], [0u8; 13], [0u8; 13]);
        assert!(a.fill_random(&mut x) && b.fill_random(&mut y) && c.fill_random(&mut z));
        assert_eq!(x, y);
        assert_ne!(x, z);
        let mut x2 = [0u8; 13];
        a.fill_random(&mut x2);
        assert_ne!(x, x2);
    }

    #[test]
    fn fake_env_clocks_move_only_when_advanced() {
        let e = FakeEnv::new(1000, 0);
        assert_eq!((e.now_ms(), e.monotonic()), (1000, Duration::ZERO));
        e.advance(Duration::from_millis(1500));
        assert_eq!(
            (e.now_ms(), e.monotonic()),
            (2500, Duration::from_millis(1500))
        );
        e.set_random_works(false);
        assert!(!e.fill_random(&mut [0u8; 4]));
    }
}
