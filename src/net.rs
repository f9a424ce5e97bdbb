//! The IO shell: listening sockets, the per-connection task and TLS. No protocol decisions
//! live here; bytes go to [`Session`], outputs come back as bytes and [`Action`]s.
//!
//! Each connection task waits on exactly three cancel-safe things: the socket becoming
//! readable, its outbox, and its session's deadline. Reads go into one scratch buffer shared
//! by the whole thread (the framer keeps only an incomplete element), so an idle connection
//! holds no read buffer at all. Writes are bounded by `write_timeout_secs`.
//!
//! [`committer`] is the one task that is not a connection: it commits staged pub-sub
//! changes on a blocking thread, so the fsync never runs on this event loop.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use rustls::ServerConnection;
use smol::LocalExecutor;

use crate::outbox::Outbox;
use crate::router::{ConnId, Router};
use crate::session::{Action, Session, Transport};
use crate::xml::XmlLimits;

/// Size of the thread-wide read buffer: one read never takes more than this from a socket,
/// which also bounds how much one connection can make the server do per wake-up.
const READ_CHUNK: usize = 16 * 1024;

/// State shared by the listeners and connection tasks of the one executor thread.
pub struct Shared {
    /// The router; borrowed only synchronously, never across an `.await`.
    pub router: RefCell<Router>,
    /// TLS configuration, if `[tls]` is set. Replaced on reload; new connections use the new one.
    pub tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    next_id: Cell<ConnId>,
    open: Cell<usize>,
    scratch: RefCell<Box<[u8]>>,
}

impl Shared {
    /// Shared state around a router.
    pub fn new(router: Router, tls: Option<Arc<rustls::ServerConfig>>) -> Rc<Shared> {
        Rc::new(Shared {
            router: RefCell::new(router),
            tls: RefCell::new(tls),
            next_id: Cell::new(1),
            open: Cell::new(0),
            scratch: RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice()),
        })
    }

    /// Number of open connections.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }
}

/// Load a PEM certificate chain and private key into a rustls server configuration
/// (ring provider, TLS 1.2 and 1.3).
pub fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not match or are unsupported: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Accept connections on `listener` forever, spawning a task per connection.
pub async fn listen(
    ex: Rc<LocalExecutor<'static>>,
    shared: Rc<Shared>,
    listener: Async<TcpListener>,
    direct_tls: bool,
) {
    let local = listener.get_ref().local_addr().ok();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, listener = ?local, "accept failed; retrying in 100 ms");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let max = shared.router.borrow().limits().max_connections;
        if shared.open.get() >= max {
            tracing::warn!(%peer, max, "connection limit reached (limits.max_connections): refusing");
            drop(stream);
            continue;
        }
        let _ = stream.get_ref().set_nodelay(true);
        let sh = shared.clone();
        ex.spawn(async move {
            sh.open.set(sh.open.get() + 1);
            serve(&sh, stream, peer, direct_tls).await;
            sh.open.set(sh.open.get() - 1);
        })
        .detach();
    }
}

enum Wake {
    Read,
    Outbox,
    Deadline,
}

/// The byte transport under a session: plain TCP, or TLS over it.
struct Conn {
    io: Async<TcpStream>,
    tls: Option<Box<ServerConnection>>,
}

impl Conn {
    /// Read once from the socket; feed every plaintext byte to `sink`. Ok(false) on EOF.
    /// Stops early, leaving decrypted input in the TLS session, once `paused` says so
    /// (back-pressure): the caller reads again, without waiting for the socket, when
    /// reading resumes.
    fn read_once(
        &mut self,
        scratch: &mut [u8],
        mut sink: impl FnMut(&[u8]) -> Action,
        paused: impl Fn() -> bool,
    ) -> io::Result<(bool, Action)> {
        let mut action = Action::Continue;
        match &mut self.tls {
            None => {
                let n = match self.io.get_ref().read(scratch) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((true, action)),
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Ok((false, action));
                }
                Ok((true, sink(&scratch[..n])))
            }
            Some(tls) => {
                // WouldBlock: nothing new on the socket, but plaintext may be left from a
                // read that stopped early.
                let eof = match tls.read_tls(&mut self.io.get_ref()) {
                    Ok(n) => n == 0,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Err(e) => return Err(e),
                };
                if let Err(e) = tls.process_new_packets() {
                    // The alert (if any) is sent by the caller's flush.
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                loop {
                    if paused() {
                        return Ok((true, action));
                    }
                    match tls.reader().read(scratch) {
                        Ok(0) => return Ok((false, action)),
                        Ok(m) => {
                            action = sink(&scratch[..m]);
                            if action != Action::Continue {
                                return Ok((true, action));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok((!eof, action))
            }
        }
    }

    fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Write `buf` (plaintext) fully, within `timeout`.
    async fn write_all(&mut self, buf: &[u8], timeout: Duration) -> io::Result<()> {
        let fut = async {
            match &mut self.tls {
                None => {
                    let mut pos = 0;
                    while pos < buf.len() {
                        match self.io.get_ref().write(&buf[pos..]) {
                            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                            Ok(n) => pos += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                self.io.writable().await?
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                }
                Some(tls) => {
                    let mut pos = 0;
                    loop {
                        if pos < buf.len() {
                            pos += tls.writer().write(&buf[pos..])?;
                        }
                        while tls.wants_write() {
                            match tls.write_tls(&mut self.io.get_ref()) {
                                Ok(_) => {}
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    self.io.writable().await?
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        if pos >= buf.len() {
                            return Ok(());
                        }
                    }
                }
            }
        };
        smol::future::or(fut, async {
            Timer::after(timeout).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
        })
        .await
    }
}

/// Serve one connection until it closes.
pub async fn serve(shared: &Shared, io: Async<TcpStream>, peer: SocketAddr, direct_tls: bool) {
    let (limits, write_timeout) = {
        let r = shared.router.borrow();
        let l = r.limits();
        (
            XmlLimits {
                max_stanza_bytes: l.max_stanza_bytes,
                max_depth: l.max_xml_depth,
                max_attrs: l.max_xml_attrs,
            },
            Duration::from_secs(l.write_timeout_secs),
        )
    };
    let id = shared.next_id.get();
    shared.next_id.set(id + 1);
    let tls_cfg = shared.tls.borrow().clone();
    let mut conn = Conn { io, tls: None };
    if direct_tls {
        let Some(cfg) = tls_cfg.clone() else { return };
        match ServerConnection::new(cfg) {
            Ok(c) => conn.tls = Some(Box::new(c)),
            Err(e) => {
                tracing::error!(error = %e, "TLS session setup failed");
                return;
            }
        }
    }
    let (max_stanzas, max_bytes) = {
        let r = shared.router.borrow();
        (r.limits().outbox_max_stanzas, r.limits().outbox_max_bytes)
    };
    let backlog = shared.router.borrow().backlog();
    let outbox = Outbox::with_backlog(max_stanzas, max_bytes, backlog);
    let transport = Transport {
        tls_active: direct_tls,
        tls_available: tls_cfg.is_some(),
        loopback: peer.ip().is_loopback(),
    };
    let mut session = Session::new(id, transport, limits, outbox.clone(), Instant::now());
    tracing::debug!(conn = id, %peer, direct_tls, "connection opened");
    let mut out: Vec<u8> = Vec::new();
    let mut action = Action::Continue;
    // Input is buffered (framer, TLS session) because reading was paused.
    let mut held_input = false;
    // Read without waiting for the socket (after reading resumed).
    let mut read_now = false;
    loop {
        if !out.is_empty() || conn.wants_write() {
            if let Err(e) = conn.write_all(&out, write_timeout).await {
                if e.kind() == io::ErrorKind::TimedOut {
                    tracing::warn!(conn = id, jid = ?session.jid().map(|j| j.as_str()), "slow consumer: write timed out (limits.write_timeout_secs); dropping connection");
                } else {
                    tracing::info!(conn = id, error = %e, "write failed; dropping connection");
                }
                break;
            }
            out = Vec::new();
        }
        match action {
            Action::Close => break,
            Action::StartTls => {
                if session.has_pending_input() {
                    tracing::info!(conn = id, "data pipelined after <starttls/>: closing");
                    break;
                }
                let Some(cfg) = tls_cfg.clone() else { break };
                match ServerConnection::new(cfg) {
                    Ok(c) => conn.tls = Some(Box::new(c)),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS session setup failed");
                        break;
                    }
                }
                session.tls_established();
                action = Action::Continue;
            }
            Action::Continue => {}
        }
        if let Some(k) = outbox.kicked() {
            action = session.on_kick(k, &mut shared.router.borrow_mut(), &mut out);
            continue;
        }
        if held_input && !outbox.reading_paused() {
            // Reading resumed: the input buffered while paused first, then the socket
            // (and any plaintext the TLS session still holds) without waiting for it.
            action = session.resume(&mut shared.router.borrow_mut(), &mut out);
            held_input = outbox.reading_paused();
            read_now = true;
            continue;
        }
        let deadline = session.deadline(&shared.router.borrow());
        // Back-pressure (see `Outbox::pause_reading`): while paused, the socket is not read
        // and only the outbox (which also signals the resumption) and the deadline count.
        let paused = outbox.reading_paused();
        let wake = if read_now && !paused {
            Wake::Read
        } else {
            smol::future::or(
                async {
                    if paused {
                        std::future::pending::<()>().await;
                    }
                    let _ = conn.io.readable().await;
                    Wake::Read
                },
                smol::future::or(
                    async {
                        outbox.ready(paused).await;
                        Wake::Outbox
                    },
                    async {
                        Timer::at(deadline).await;
                        Wake::Deadline
                    },
                ),
            )
            .await
        };
        read_now = false;
        match wake {
            Wake::Read => {
                let res = {
                    let mut scratch = shared.scratch.borrow_mut();
                    conn.read_once(
                        &mut scratch,
                        |bytes| {
                            session.receive(
                                bytes,
                                &mut shared.router.borrow_mut(),
                                &mut out,
                                Instant::now(),
                            )
                        },
                        || outbox.reading_paused(),
                    )
                };
                held_input = outbox.reading_paused();
                match res {
                    Ok((true, a)) => action = a,
                    Ok((false, _)) => {
                        tracing::debug!(conn = id, "peer closed the connection");
                        if !out.is_empty() || conn.wants_write() {
                            let _ = conn.write_all(&out, write_timeout).await;
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::info!(conn = id, error = %e, "read failed; dropping connection");
                        if conn.wants_write() {
                            let _ = conn.write_all(&[], write_timeout).await;
                        }
                        break;
                    }
                }
            }
            Wake::Outbox => {
                if outbox.drain_into(&mut out) {
                    // Backlog bytes went out: requests held back for them may go on.
                    shared.router.borrow_mut().pubsub_backlog_released();
                }
            }
            Wake::Deadline => {
                action =
                    session.on_deadline(&mut shared.router.borrow_mut(), &mut out, Instant::now());
            }
        }
    }
    session.on_disconnect(&mut shared.router.borrow_mut());
    if let Some(tls) = &mut conn.tls {
        tls.send_close_notify();
        let _ = tls.write_tls(&mut conn.io.get_ref());
    }
    tracing::debug!(conn = id, "connection closed");
}

/// First pause before the committer tries again to reopen the database after a failed
/// write and a failed reopening; it doubles up to [`RECOVERY_RETRY_MAX`].
const RECOVERY_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to reopen the database.
const RECOVERY_RETRY_MAX: Duration = Duration::from_secs(30);

/// Reopens the database after a failed write, on a blocking thread (redb repairs the
/// file from its last durable commit: it reads the whole file and syncs twice), and hands
/// the outcome to the router. Returns whether the store and the pub-sub service work.
async fn recover_storage(shared: &Rc<Shared>) -> bool {
    let job = match shared.router.borrow().store().reopen_begin() {
        Ok(job) => job,
        Err(e) => {
            tracing::debug!(error = %e, "database not reopened yet");
            return false;
        }
    };
    let started = Instant::now();
    let reopened = smol::unblock(move || job.run()).await;
    tracing::debug!(
        millis = started.elapsed().as_millis() as u64,
        "database reopened after a failed write"
    );
    shared.router.borrow_mut().storage_reopened(reopened)
}

/// The pub-sub group committer (see `store::writer`): waits for staged changes, commits
/// them in one redb transaction on a blocking thread (so the fsync never stalls the event
/// loop: other clients are served meanwhile), and hands the outcome to the router, which
/// releases the held replies and notifications. In interval mode it commits every
/// interval, or sooner when a batch is full. After [`Store::pubsub_close`] it commits what
/// is pending once more and returns.
///
/// After a failed commit it reopens the database (see [`recover_storage`]) before it hands
/// the failure to the router; if that fails it tries again every 1 s, then 2, 4... up to
/// 30 s, until the disk works again (a storage fault never needs a restart).
///
/// [`Store::pubsub_close`]: crate::store::Store::pubsub_close
pub async fn committer(shared: Rc<Shared>) {
    use crate::store::CommitMode;
    let mode = shared.router.borrow().store().pubsub_mode();
    if mode == CommitMode::Inline {
        return;
    }
    let work = || std::future::poll_fn(|cx| shared.router.borrow().store().pubsub_poll_work(cx));
    // Totals for the log line at stop: transactions (fsyncs), ops, and time spent in them.
    let (mut commits, mut total_ops, mut busy) = (0u64, 0u64, Duration::ZERO);
    let mut retry = RECOVERY_RETRY_MIN;
    loop {
        if shared.router.borrow().storage_needs_recovery()
            && !shared.router.borrow().store().pubsub_closing()
        {
            // The last write failed and reopening (or reloading) failed too: try again
            // after a pause that grows to RECOVERY_RETRY_MAX, watching for shutdown.
            let until = Instant::now() + retry;
            while Instant::now() < until && !shared.router.borrow().store().pubsub_closing() {
                Timer::after(Duration::from_millis(250)).await;
            }
            retry = (retry * 2).min(RECOVERY_RETRY_MAX);
            if recover_storage(&shared).await {
                retry = RECOVERY_RETRY_MIN;
            }
            continue;
        }
        match mode {
            CommitMode::Interval(every) => {
                smol::future::or(
                    async {
                        Timer::after(every).await;
                    },
                    work(),
                )
                .await;
            }
            _ => work().await,
        }
        let closing = shared.router.borrow().store().pubsub_closing();
        let batch = shared.router.borrow().store().pubsub_take();
        if let Some(batch) = batch {
            let generation = batch.generation();
            let ops = batch.len();
            let started = Instant::now();
            let result = if batch.is_empty() {
                Ok(())
            } else {
                commits += 1;
                total_ops += ops as u64;
                smol::unblock(move || batch.write()).await
            };
            if let Err(e) = &result {
                // redb refuses all I/O after a failed write: reopen the file first (off
                // this thread), so that the failed requests' replies go out with the
                // state reloaded from the disk, and reads held behind them are answered.
                shared.router.borrow_mut().storage_write_failed(e);
                recover_storage(&shared).await;
            }
            busy += started.elapsed();
            tracing::trace!(
                generation,
                ops,
                micros = started.elapsed().as_micros() as u64,
                "pub-sub batch committed"
            );
            shared
                .router
                .borrow_mut()
                .pubsub_committed(generation, result);
        }
        if closing {
            tracing::info!(
                commits,
                ops = total_ops,
                busy_ms = busy.as_millis() as u64,
                "pub-sub committer stopped"
            );
            return;
        }
    }
}
