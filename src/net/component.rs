//! The XEP-0114 component connection (`[component]`): connect to the server, run the
//! sans-IO [`ComponentStream`] over the socket, hand the router the connection's outbox
//! while the server accepts us, and reconnect with a bounded, jittered exponential backoff.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};

use super::{Conn, Shared};
use crate::component::{ComponentStream, Event};
use crate::config::ComponentCfg;
use crate::outbox::Outbox;

/// Longest wait for the TCP connection and for the server to accept the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before a reconnection; it doubles up to `component.reconnect_max_secs`.
const BACKOFF_MIN: Duration = Duration::from_secs(1);

/// Reads the shared secret from `path` (its first line, trimmed). Warns when other users
/// may read the file.
///
/// # Errors
///
/// An unreadable or empty file, as a message that names it.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("component.secret_file: cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o004 != 0 {
                tracing::warn!(file = %path.display(), "component.secret_file is readable by every user: chmod o-r it");
            }
        }
    }
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(format!(
            "component.secret_file: {} holds no secret on its first line",
            path.display()
        ));
    }
    Ok(secret)
}

/// How one connection attempt ended.
struct Ended {
    /// The server had accepted the handshake.
    was_ready: bool,
    /// The server refused the secret.
    auth: bool,
    reason: String,
}

/// Keeps the component connected, forever (cancelled at shutdown).
pub async fn run(shared: Rc<Shared>, cfg: ComponentCfg, secret: String) {
    let max = Duration::from_secs(cfg.reconnect_max_secs).max(BACKOFF_MIN);
    let mut backoff = BACKOFF_MIN;
    loop {
        let ended = attempt(&shared, &cfg, &secret).await;
        if ended.was_ready {
            backoff = BACKOFF_MIN;
        }
        // Jitter: a pause between half and all of the backoff step.
        let mut r = [0u8; 2];
        let frac = if shared.router.borrow().env().fill_random(&mut r) {
            f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX)
        } else {
            1.0
        };
        let pause = backoff.mul_f64(0.5 + frac / 2.0);
        if ended.auth {
            tracing::error!(server = %cfg.server, jid = %cfg.jid, reason = %ended.reason, retry_in_ms = pause.as_millis() as u64, "component: the server refused the handshake: check component.secret_file and the server's component secret");
        } else {
            tracing::warn!(server = %cfg.server, jid = %cfg.jid, reason = %ended.reason, retry_in_ms = pause.as_millis() as u64, "component: not connected; retrying");
        }
        Timer::after(pause).await;
        backoff = (backoff * 2).min(max);
    }
}

/// Resolves `server` (off the event loop: it may ask DNS) and connects, within the timeout.
async fn connect(server: &str) -> io::Result<Async<TcpStream>> {
    let name = server.to_owned();
    let addrs: Vec<SocketAddr> =
        smol::unblock(move || name.to_socket_addrs().map(Vec::from_iter)).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        let fut = Async::<TcpStream>::connect(a);
        let res = smol::future::or(fut, async {
            Timer::after(CONNECT_TIMEOUT).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        })
        .await;
        match res {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

enum Wake {
    Read,
    Outbox,
    /// The handshake deadline passed, or (once connected) the keepalive is due.
    Timer,
}

/// One connection: until it fails or closes.
async fn attempt(shared: &Rc<Shared>, cfg: &ComponentCfg, secret: &str) -> Ended {
    let io = match connect(&cfg.server).await {
        Ok(io) => io,
        Err(e) => {
            return Ended {
                was_ready: false,
                auth: false,
                reason: format!("cannot connect: {e}"),
            };
        }
    };
    let _ = io.get_ref().set_nodelay(true);
    let (limits, write_timeout, max_stanzas, max_bytes, backlog) = {
        let r = shared.router.borrow();
        let l = r.limits();
        (
            l.xml_limits(),
            Duration::from_secs(l.write_timeout_secs),
            l.outbox_max_stanzas,
            l.outbox_max_bytes,
            r.backlog(),
        )
    };
    let outbox = Outbox::with_backlog(max_stanzas, max_bytes, backlog);
    let mut conn = Conn { io, tls: None };
    let mut stream = ComponentStream::new(&cfg.jid, secret, limits);
    let mut out = Vec::new();
    stream.open(&mut out);
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    // Whitespace keepalive after this long without writing (`limits.idle_ping_secs`, 0 = off).
    let idle = match shared.router.borrow().limits().idle_ping_secs {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    let mut last_write = Instant::now();
    let mut attached = false;
    let ended = loop {
        if !out.is_empty() {
            if let Err(e) = conn.write_all(&out, write_timeout).await {
                break (false, format!("write failed: {e}"));
            }
            out.clear();
            last_write = Instant::now();
        }
        if let Some(k) = outbox.kicked() {
            break (false, format!("dropped by the router: {k:?}"));
        }
        let paused = outbox.reading_paused();
        let wake = smol::future::or(
            async {
                if super::readable_or_ready(&conn.io, paused, &outbox, paused).await {
                    Wake::Read
                } else {
                    Wake::Outbox
                }
            },
            async {
                match (attached, idle) {
                    (false, _) => Timer::at(deadline).await,
                    (true, Some(every)) => Timer::at(last_write + every).await,
                    (true, None) => std::future::pending::<Instant>().await,
                };
                Wake::Timer
            },
        )
        .await;
        match wake {
            Wake::Timer if !attached => {
                break (
                    false,
                    "the server did not accept the handshake in time".into(),
                );
            }
            Wake::Timer => {
                // Whitespace keepalive (RFC 6120 §4.6.1): a dead link shows as a write
                // that fails or times out (limits.write_timeout_secs).
                out.push(b' ');
            }
            Wake::Outbox => {
                if outbox.drain_into(&mut out) {
                    shared.router.borrow_mut().pubsub_backlog_released();
                }
            }
            Wake::Read => {
                let read = {
                    let mut scratch = shared.scratch.borrow_mut();
                    match conn.io.get_ref().read(&mut scratch) {
                        Ok(0) => Err("the server closed the connection".to_owned()),
                        Ok(n) => Ok(Some(stream.receive(
                            &scratch[..n],
                            &mut shared.router.borrow_mut(),
                            &mut out,
                        ))),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                        Err(e) => Err(format!("read failed: {e}")),
                    }
                };
                let ev = match read {
                    Ok(Some(ev)) => ev,
                    Ok(None) => continue,
                    Err(why) => break (false, why),
                };
                match ev {
                    Event::Continue => {}
                    Event::Ready => {
                        attached = true;
                        shared.router.borrow_mut().component_attach(outbox.clone());
                        tracing::info!(server = %cfg.server, jid = %cfg.jid, "component: connected; serving pub-sub at the component's JID");
                        // Output queued before the handshake was accepted.
                        outbox.drain_into(&mut out);
                    }
                    Event::Closed { reason, auth } => {
                        let _ = conn.write_all(&out, write_timeout).await;
                        break (auth, reason);
                    }
                }
            }
        }
    };
    if attached {
        shared.router.borrow_mut().component_detach();
    }
    Ended {
        was_ready: attached,
        auth: ended.0 && !attached,
        reason: ended.1,
    }
}
