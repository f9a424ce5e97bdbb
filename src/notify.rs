//! The systemd readiness and watchdog protocol (`sd_notify(3)`), written directly to
//! `NOTIFY_SOCKET` with std's `UnixDatagram`: no libsystemd, no crate, no `unsafe`.
//!
//! The protocol is one datagram per state change, holding newline-separated `KEY=VALUE` lines
//! (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=…`). `NOTIFY_SOCKET` names the socket: an
//! absolute path, or `@name` for a Linux abstract socket (the `@` stands for the leading NUL
//! byte). When the variable is unset (OpenWrt's procd, a shell) every call is a no-op, so the
//! daemon can always call [`Notifier::notify`] without asking who supervises it.
//!
//! Watchdog: systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`) when the unit has
//! `WatchdogSec=`. [`watchdog_interval`] returns half of it, as `sd_watchdog_enabled(3)`
//! recommends; the daemon pings from its event loop, so a wedged loop trips the watchdog.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Upper bound on a `STATUS=` text, in bytes: systemd shows one line of status, and a datagram
/// must stay well below the socket's send buffer.
pub const MAX_STATUS_BYTES: usize = 512;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    /// An unbound datagram socket; every message is sent with `send_to_addr`.
    sock: UnixDatagram,
    /// Where the service manager listens.
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier named by `NOTIFY_SOCKET`, or `None` when the variable is unset or empty.
    ///
    /// # Errors
    /// When the variable is set but names no usable address (neither `/path` nor `@name`),
    /// or the socket cannot be created.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the `NOTIFY_SOCKET` value `value`: `/absolute/path` or `@abstract`.
    ///
    /// # Errors
    /// `InvalidInput` for any other form (systemd's `vsock:` addresses are not supported);
    /// an OS error when the socket cannot be created.
    pub fn new(value: &OsStr) -> io::Result<Notifier> {
        let addr = parse_address(value)?;
        let sock = UnixDatagram::unbound()?;
        Ok(Notifier { sock, addr })
    }

    /// Send one notification, e.g. `"READY=1\nSTATUS=accepting connections"`.
    ///
    /// # Errors
    /// The OS error of `sendto(2)`; the caller logs it and carries on (a lost notification
    /// must never stop the broker).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let n = self.sock.send_to_addr(state.as_bytes(), &self.addr)?;
        if n != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification datagram truncated",
            ));
        }
        Ok(())
    }
}

/// Parse a `NOTIFY_SOCKET` value into a socket address.
fn parse_address(value: &OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(value),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(b'@') if bytes.len() > 1 => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "NOTIFY_SOCKET={:?} is neither an absolute path nor an @abstract name",
                value
            ),
        )),
    }
}

/// Build a `STATUS=` line from free text: newlines become spaces (a newline would start a
/// new `KEY=VALUE` pair) and the text is cut to [`MAX_STATUS_BYTES`] on a char boundary.
pub fn status_line(text: &str) -> String {
    let mut s = String::with_capacity(text.len().min(MAX_STATUS_BYTES) + 7);
    s.push_str("STATUS=");
    for c in text.chars() {
        if s.len() + c.len_utf8() > MAX_STATUS_BYTES + 7 {
            break;
        }
        s.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
    s
}

/// The watchdog ping interval asked for by the environment (`WATCHDOG_USEC`, `WATCHDOG_PID`),
/// or `None` when the watchdog is off or meant for another process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The pure part of [`watchdog_interval`]: half of `usec`, if `pid` (when given) is `my_pid`.
/// Malformed or zero values mean "no watchdog", as in `sd_watchdog_enabled(3)`. The interval
/// is never below 1 ms, so a tiny `WatchdogSec=` cannot make the daemon spin.
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_receives_each_state() {
        let dir = TempDir::new("notify-path");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.notify("READY=1\nSTATUS=accepting connections").unwrap();
        n.notify("WATCHDOG=1").unwrap();
        n.notify("STOPPING=1").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=accepting connections");
        assert_eq!(recv(&server), "WATCHDOG=1");
        assert_eq!(recv(&server), "STOPPING=1");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kinglet-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.notify("READY=1").unwrap();
        assert_eq!(recv(&server), "READY=1");
    }

    #[test]
    fn missing_listener_is_an_error_not_a_panic() {
        let dir = TempDir::new("notify-gone");
        let n = Notifier::new(dir.join("nobody.sock").as_os_str()).unwrap();
        assert!(n.notify("READY=1").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_addresses_are_rejected() {
        for v in ["relative.sock", "@", "vsock:2:1234"] {
            assert!(Notifier::new(OsStr::new(v)).is_err(), "{v}");
        }
    }

    #[test]
    fn watchdog_values() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            parse_watchdog(Some("4000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_watchdog(Some("4000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("4000000"), Some("x"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("-5"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
        assert_eq!(
            parse_watchdog(Some("1"), None, 7),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn status_is_one_bounded_line() {
        assert_eq!(status_line("a\nb"), "STATUS=a b");
        let long = "é".repeat(1000);
        let s = status_line(&long);
        assert!(s.len() <= MAX_STATUS_BYTES + 7);
        assert!(s.starts_with("STATUS=é"));
    }
}
