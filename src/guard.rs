//! Sans-IO defences against login abuse and connection floods: the bookkeeping that the
//! connection shell ([`crate::net`]) consults before it reads from a peer.
//!
//! This module owns:
//! - [`AddrKey`]: the unit a peer is counted by (an IPv4 address, or an IPv6 /64, since one
//!   host usually holds a whole /64);
//! - [`Throttle`]: failed logins per source address, with a delay that doubles per failure
//!   and decays with time, in a table of bounded size;
//! - [`Admission`]: connection slots (total, unauthenticated, unauthenticated per address)
//!   and the bytes buffered by unauthenticated connections;
//! - [`RateLog`]: one log line per window for events an attacker can trigger, with a count.
//!
//! Nothing here reads a clock: every call takes `now`, so tests drive time by hand.
//! Every bound comes from [`Limits`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::limits::Limits;

/// Window of the throttle's decay (the failure count halves per window without a failure),
/// of its "throttling" log line (once per address and window), of the longest delay an
/// address can accumulate, and of [`RateLog`] in the shell.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Highest failure count kept (the delay is long capped by then; keeps the shift in range).
const MAX_FAILURES: u32 = 32;

/// What a peer is counted by: an IPv4 address, or the /64 prefix of an IPv6 address
/// (IPv4-mapped IPv6 addresses count as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrKey {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl AddrKey {
    /// The key of a peer address.
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&o[..8]);
                    AddrKey::V6(p)
                }
            },
        }
    }
}

impl fmt::Display for AddrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrKey::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(*o)),
            AddrKey::V6(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(p);
                write!(f, "{}/64", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

/// Rate limit for a log line an attacker can trigger: at most one line per window, which
/// carries how many events it stands for.
#[derive(Debug)]
///
/// `T` is the clock's type: the shell's `Instant`, or the router's monotonic `Duration`
/// (`Env::monotonic`).
pub struct RateLog<T = Instant> {
    window: Duration,
    /// When the next line may be written (`None`: at once).
    next: Option<T>,
    /// Events since the last line.
    count: u64,
}

impl<T: Copy + Ord + std::ops::Add<Duration, Output = T>> RateLog<T> {
    /// A limiter writing at most one line per `window`.
    pub fn new(window: Duration) -> RateLog<T> {
        RateLog {
            window,
            next: None,
            count: 0,
        }
    }

    /// Records one event. Returns `Some(n)` when a line is due now, `n` being the number of
    /// events it stands for (this one included); `None` when the line is suppressed.
    pub fn hit(&mut self, now: T) -> Option<u64> {
        self.count = self.count.saturating_add(1);
        if self.next.is_some_and(|t| now < t) {
            return None;
        }
        self.next = Some(now + self.window);
        Some(std::mem::take(&mut self.count))
    }
}

/// One source address's failed logins.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Failures, decayed (halved per [`WINDOW`] since `last`).
    failures: u32,
    /// Time of the last failure.
    last: Instant,
    /// No unauthenticated input from the address is read before this.
    release: Instant,
    /// When the "throttling" line was last logged for this address.
    logged: Option<Instant>,
}

/// What [`Throttle::failed`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Failures counted for the address (after decay, this one included).
    pub failures: u32,
    /// How long the address must now wait before its input is read again.
    pub wait: Duration,
    /// Whether to log "throttling ADDR" now (once per address and [`WINDOW`]).
    pub log: bool,
}

/// Failed logins per source address (see the module documentation).
///
/// Each failure from an address adds `base * 2^(failures - 1)` (at most `max`) to the
/// instant before which nothing more from that address is read; so attempts from one address
/// are spaced out whatever the number of its connections, and a legitimate user who mistyped
/// once waits `base`. The table holds at most `entries` addresses; when full, the address
/// whose last failure is oldest is forgotten (a scan of the table: failures are bounded by
/// `auth_queue` and by this throttle, so the scan does not stall the loop).
#[derive(Debug)]
pub struct Throttle {
    base: Duration,
    max: Duration,
    entries: usize,
    table: HashMap<AddrKey, Entry>,
}

impl Throttle {
    /// A throttle with the bounds of `limits` (`auth_throttle_*`).
    pub fn new(limits: &Limits) -> Throttle {
        Throttle {
            base: Duration::from_millis(limits.auth_throttle_base_ms),
            max: Duration::from_millis(limits.auth_throttle_max_ms),
            entries: limits.auth_throttle_entries.max(1),
            table: HashMap::new(),
        }
    }

    /// Whether throttling is on (`auth_throttle_base_ms > 0`).
    pub fn enabled(&self) -> bool {
        !self.base.is_zero()
    }

    /// The instant before which no unauthenticated input from `key` may be read, if it is
    /// still ahead of `now`.
    pub fn gate(&self, key: AddrKey, now: Instant) -> Option<Instant> {
        self.table.get(&key).map(|e| e.release).filter(|&t| t > now)
    }

    /// Records a failed login from `key` at `now`.
    pub fn failed(&mut self, key: AddrKey, now: Instant) -> Failure {
        if !self.enabled() {
            return Failure {
                failures: 0,
                wait: Duration::ZERO,
                log: false,
            };
        }
        if !self.table.contains_key(&key) && self.table.len() >= self.entries {
            self.evict_oldest();
        }
        let e = self.table.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            release: now,
            logged: None,
        });
        let idle = now.saturating_duration_since(e.last);
        let halvings = idle.as_secs() / WINDOW.as_secs();
        e.failures = if halvings >= 32 {
            0
        } else {
            e.failures >> halvings
        };
        e.failures = (e.failures + 1).min(MAX_FAILURES);
        e.last = now;
        let factor = 1u32 << (e.failures - 1).min(20);
        let delay = self.base.saturating_mul(factor).min(self.max);
        e.release = (e.release.max(now) + delay).min(now + WINDOW);
        let log = e
            .logged
            .is_none_or(|t| now.saturating_duration_since(t) >= WINDOW);
        if log {
            e.logged = Some(now);
        }
        Failure {
            failures: e.failures,
            wait: e.release.saturating_duration_since(now),
            log,
        }
    }

    /// A successful login from `key`: its failures are forgotten.
    pub fn succeeded(&mut self, key: AddrKey) {
        self.table.remove(&key);
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .table
            .iter()
            .min_by_key(|(_, e)| e.last)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.table.remove(&k);
        }
    }
}

/// Why [`Admission::admit`] refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open.
    Full,
    /// All slots open to unauthenticated connections are taken (the rest are reserved for
    /// authenticated sessions, `authenticated_reserve_percent`).
    PreAuthFull,
    /// The address has `preauth_per_address` unauthenticated connections already.
    PerAddress,
}

impl Refusal {
    /// What the operator can tune, for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Full => "connection limit reached (limits.max_connections)",
            Refusal::PreAuthFull => {
                "unauthenticated connection slots full (limits.max_connections minus \
                 limits.authenticated_reserve_percent)"
            }
            Refusal::PerAddress => {
                "too many unauthenticated connections from one address \
                 (limits.preauth_per_address)"
            }
        }
    }
}

/// One admitted connection's share of the [`Admission`] counters. Owned by its connection
/// task and handed back to [`Admission::release`] when the connection ends.
#[derive(Debug)]
pub struct Ticket {
    key: AddrKey,
    preauth: bool,
    bytes: usize,
}

impl Ticket {
    /// The peer's address key.
    pub fn key(&self) -> AddrKey {
        self.key
    }

    /// Whether the connection has not authenticated yet.
    pub fn preauth(&self) -> bool {
        self.preauth
    }
}

/// Connection slots and the memory of unauthenticated connections (see the module
/// documentation). Counters are raised when a connection is accepted, before its task runs,
/// so `max_connections` cannot be overshot.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    preauth_max: usize,
    per_address: usize,
    budget: usize,
    open: usize,
    preauth: usize,
    per_addr: HashMap<AddrKey, usize>,
    bytes: usize,
}

impl Admission {
    /// Admission with the bounds of `limits`.
    pub fn new(limits: &Limits) -> Admission {
        Admission {
            max: limits.max_connections,
            preauth_max: limits.preauth_max_connections(),
            per_address: limits.preauth_per_address,
            budget: limits.preauth_buffer_bytes,
            open: 0,
            preauth: 0,
            per_addr: HashMap::new(),
            bytes: 0,
        }
    }

    /// Admits a new (unauthenticated) connection from `key`, or says why not.
    pub fn admit(&mut self, key: AddrKey) -> Result<Ticket, Refusal> {
        if self.open >= self.max {
            return Err(Refusal::Full);
        }
        if self.preauth >= self.preauth_max {
            return Err(Refusal::PreAuthFull);
        }
        let n = self.per_addr.get(&key).copied().unwrap_or(0);
        if n >= self.per_address {
            return Err(Refusal::PerAddress);
        }
        self.per_addr.insert(key, n + 1);
        self.open += 1;
        self.preauth += 1;
        Ok(Ticket {
            key,
            preauth: true,
            bytes: 0,
        })
    }

    /// The connection authenticated: it leaves the unauthenticated counts (its buffered
    /// bytes included) and keeps its connection slot.
    pub fn authenticated(&mut self, t: &mut Ticket) {
        if !t.preauth {
            return;
        }
        self.leave_preauth(t);
    }

    /// The connection ended: its slot and, if still unauthenticated, its counts are freed.
    pub fn release(&mut self, mut t: Ticket) {
        if t.preauth {
            self.leave_preauth(&mut t);
        }
        self.open = self.open.saturating_sub(1);
    }

    /// An unauthenticated connection now buffers `bytes`. Returns false if that takes the
    /// total over `preauth_buffer_bytes` while this connection's share grew: the caller
    /// closes it (its bytes stay counted until [`Admission::release`]).
    pub fn buffered(&mut self, t: &mut Ticket, bytes: usize) -> bool {
        if !t.preauth {
            return true;
        }
        let grew = bytes > t.bytes;
        self.bytes = self.bytes.saturating_sub(t.bytes).saturating_add(bytes);
        t.bytes = bytes;
        !(grew && self.bytes > self.budget)
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Unauthenticated connections.
    pub fn preauth(&self) -> usize {
        self.preauth
    }

    /// Bytes buffered by unauthenticated connections.
    pub fn preauth_bytes(&self) -> usize {
        self.bytes
    }

    fn leave_preauth(&mut self, t: &mut Ticket) {
        self.preauth = self.preauth.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(t.bytes);
        t.bytes = 0;
        t.preauth = false;
        if let Some(n) = self.per_addr.get_mut(&t.key) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&t.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> AddrKey {
        AddrKey::of(IpAddr::from([a, b, c, d]))
    }

    fn limits() -> Limits {
        Limits::default()
    }

    /// Admission for `max_connections` with `reserve_percent` kept for authenticated
    /// sessions and no per-address cap that matters.
    fn admission(max_connections: usize, reserve_percent: usize) -> Admission {
        Admission::new(&Limits {
            max_connections,
            authenticated_reserve_percent: reserve_percent,
            preauth_per_address: 100,
            ..limits()
        })
    }

    /// A throttle with the default limits, the address it is tested with, and the start.
    fn throttle() -> (Throttle, AddrKey, Instant) {
        (Throttle::new(&limits()), v4(10, 0, 0, 1), Instant::now())
    }

    #[test]
    fn ipv6_peers_count_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddrKey::of(a), AddrKey::of(b));
        assert_ne!(AddrKey::of(a), AddrKey::of(c));
        assert_eq!(AddrKey::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(AddrKey::of(mapped), v4(192, 0, 2, 7));
        assert_eq!(v4(192, 0, 2, 7).to_string(), "192.0.2.7");
    }

    #[test]
    fn throttle_delay_doubles_up_to_the_cap_and_spaces_attempts() {
        let (mut t, k, t0) = throttle();
        assert_eq!(t.gate(k, t0), None, "no failure, no wait");
        let f = t.failed(k, t0);
        assert_eq!((f.failures, f.wait), (1, Duration::from_millis(250)));
        assert!(f.log, "first failure logs");
        assert_eq!(t.gate(k, t0), Some(t0 + Duration::from_millis(250)));
        assert_eq!(t.gate(k, t0 + Duration::from_millis(250)), None);
        // Each attempt after its wait: 500, 1000, 2000, 4000, then capped at 4000.
        let mut now = t0 + Duration::from_millis(250);
        for expected in [500u64, 1000, 2000, 4000, 4000, 4000] {
            let f = t.failed(k, now);
            assert_eq!(f.wait, Duration::from_millis(expected));
            assert!(!f.log, "logged once per window");
            now += f.wait;
        }
        // Other addresses are not affected.
        assert_eq!(
            t.gate(v4(10, 0, 0, 2), now - Duration::from_millis(1)),
            None
        );
    }

    #[test]
    fn throttle_parallel_failures_from_one_address_add_up_within_a_window() {
        let (mut t, k, t0) = throttle();
        // Eight connections fail at the same instant: their delays queue up.
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            last = t.failed(k, t0).wait;
        }
        // 250 + 500 + 1000 + 2000 + 4 x 4000.
        assert_eq!(last, Duration::from_millis(19_750));
        for _ in 0..20 {
            last = t.failed(k, t0).wait;
        }
        assert_eq!(last, WINDOW, "never more than one window ahead");
    }

    #[test]
    fn throttle_decays_and_success_clears() {
        let (mut t, k, t0) = throttle();
        for _ in 0..4 {
            t.failed(k, t0);
        }
        // Two quiet windows: 4 failures decay to 1, so the next one counts as the second.
        let later = t0 + 2 * WINDOW;
        let f = t.failed(k, later);
        assert_eq!(f.failures, 2);
        assert_eq!(f.wait, Duration::from_millis(500));
        assert!(f.log, "a new window logs again");
        t.succeeded(k);
        assert!(t.is_empty());
        assert_eq!(t.gate(k, later), None);
        assert_eq!(t.failed(k, later).wait, Duration::from_millis(250));
    }

    #[test]
    fn throttle_table_is_bounded_and_forgets_the_oldest() {
        let mut t = Throttle::new(&Limits {
            auth_throttle_entries: 3,
            ..limits()
        });
        let t0 = Instant::now();
        for i in 0..3u8 {
            t.failed(v4(10, 0, 0, i), t0 + Duration::from_secs(u64::from(i)));
        }
        assert_eq!(t.len(), 3);
        let now = t0 + Duration::from_secs(10);
        t.failed(v4(10, 0, 0, 9), now);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.gate(v4(10, 0, 0, 0), t0),
            None,
            "the oldest address was forgotten"
        );
        assert!(
            t.gate(v4(10, 0, 0, 2), t0 + Duration::from_secs(2))
                .is_some()
        );
        assert!(t.gate(v4(10, 0, 0, 9), now).is_some());
    }

    #[test]
    fn throttle_can_be_disabled() {
        let mut t = Throttle::new(&Limits {
            auth_throttle_base_ms: 0,
            auth_throttle_max_ms: 0,
            ..limits()
        });
        let k = v4(10, 0, 0, 1);
        let now = Instant::now();
        assert_eq!(t.failed(k, now).wait, Duration::ZERO);
        assert_eq!(t.gate(k, now), None);
        assert!(t.is_empty());
    }

    #[test]
    fn rate_log_writes_one_line_per_window_with_the_count() {
        let mut r = RateLog::new(WINDOW);
        let t0 = Instant::now();
        assert_eq!(r.hit(t0), Some(1));
        for i in 1..=1000u64 {
            assert_eq!(r.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit(t0 + WINDOW), Some(1001));
        assert_eq!(r.hit(t0 + WINDOW), None);
    }

    #[test]
    fn admission_counts_before_the_task_runs_so_max_connections_holds() {
        let mut a = admission(10, 0);
        let k = v4(10, 0, 0, 1);
        let mut tickets: Vec<Ticket> = (0..10).map(|_| a.admit(k).expect("room")).collect();
        assert_eq!(a.admit(k).unwrap_err(), Refusal::Full);
        assert_eq!(a.open(), 10);
        a.release(tickets.pop().unwrap());
        assert!(a.admit(k).is_ok());
    }

    #[test]
    fn admission_caps_unauthenticated_connections_per_address() {
        let mut a = Admission::new(&Limits {
            preauth_per_address: 2,
            ..limits()
        });
        let (x, y) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
        let mut t1 = a.admit(x).unwrap();
        let t2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refusal::PerAddress);
        assert!(a.admit(y).is_ok(), "another address is not affected");
        // Authenticating frees the address's unauthenticated slot, not the connection.
        a.authenticated(&mut t1);
        assert!(!t1.preauth());
        let t3 = a.admit(x).unwrap();
        assert_eq!(a.open(), 4);
        a.release(t2);
        a.release(t3);
        a.release(t1);
        assert_eq!((a.open(), a.preauth()), (1, 1));
    }

    #[test]
    fn admission_reserves_slots_for_authenticated_sessions() {
        let mut a = admission(10, 20);
        let k = v4(10, 0, 0, 1);
        let mut t: Vec<Ticket> = (0..8).map(|_| a.admit(k).unwrap()).collect();
        assert_eq!(a.admit(k).unwrap_err(), Refusal::PreAuthFull);
        // Two log in; their unauthenticated slots go to new connections, up to the total.
        a.authenticated(&mut t[0]);
        a.authenticated(&mut t[1]);
        let _n1 = a.admit(k).unwrap();
        let _n2 = a.admit(k).unwrap();
        assert_eq!(a.admit(k).unwrap_err(), Refusal::Full);
        assert_eq!((a.open(), a.preauth()), (10, 8));
    }

    #[test]
    fn admission_budget_closes_the_connection_that_grows_past_it() {
        let mut a = Admission::new(&Limits {
            preauth_buffer_bytes: 65536,
            ..limits()
        });
        let mut t1 = a.admit(v4(10, 0, 0, 1)).unwrap();
        let mut t2 = a.admit(v4(10, 0, 0, 2)).unwrap();
        assert!(a.buffered(&mut t1, 40_000));
        assert!(!a.buffered(&mut t2, 30_000), "t2 took the total over");
        assert!(a.buffered(&mut t1, 1_000), "shrinking is always fine");
        assert_eq!(a.preauth_bytes(), 31_000);
        a.release(t2);
        assert_eq!(a.preauth_bytes(), 1_000);
        a.authenticated(&mut t1);
        assert_eq!(a.preauth_bytes(), 0, "authenticated bytes leave the budget");
        assert!(a.buffered(&mut t1, 1 << 20), "not counted after auth");
        assert_eq!(a.preauth_bytes(), 0);
    }
}
