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
//!
//! Login abuse and connection floods (see [`crate::guard`]): a connection is admitted, and
//! counted, before its task is spawned: within `max_connections`, within the slots open to
//! unauthenticated connections, and within `preauth_per_address`. Until SASL succeeds its
//! elements are limited to `preauth_max_stanza_bytes` and its buffered bytes count against
//! `preauth_buffer_bytes`. SASL PLAIN passwords are checked on the blocking pool, at most
//! `auth_queue` at once; while a check runs its connection is not read. After a failed login
//! no unauthenticated input from that source address is read until its throttle delay has
//! passed. Refusals are logged once per minute with a count.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use rustls::ServerConnection;
use smol::LocalExecutor;

use crate::guard::{self, AddrKey, Admission, RateLog, Refusal, Throttle, Ticket};
use crate::outbox::Outbox;
use crate::proto::StreamCondition;
use crate::router::{ConnId, Router};
use crate::session::{Action, AuthEvent, PasswordVerdict, Session, Transport};
use crate::store::Store;

pub mod component;

/// State shared by the listeners and connection tasks of the one executor thread.
pub struct Shared {
    /// The router; borrowed only synchronously, never across an `.await`.
    pub router: RefCell<Router>,
    /// The redb store the router reaches through [`crate::storage::Storage`]; the shell
    /// drives its group commit, reopening and shutdown.
    pub store: Rc<Store>,
    /// TLS configuration, if `[tls]` is set. Replaced on reload; new connections use the new one.
    pub tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    next_id: Cell<ConnId>,
    scratch: RefCell<Box<[u8]>>,
    /// Connection slots and the bytes of unauthenticated connections.
    admission: RefCell<Admission>,
    /// Failed logins per source address.
    throttle: RefCell<Throttle>,
    /// Password checks running or waiting on the blocking pool (`limits.auth_queue`).
    auth_inflight: Arc<AtomicUsize>,
    /// Rate limits of the log lines an attacker can trigger.
    logs: RefCell<Logs>,
}

/// One [`RateLog`] per kind of refusal.
struct Logs {
    full: RateLog,
    preauth_full: RateLog,
    per_address: RateLog,
    budget: RateLog,
    auth_queue: RateLog,
}

/// Decrements the password-check count when the check ends (or is dropped unrun).
struct Inflight(Arc<AtomicUsize>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Shared state around a router.
    pub fn new(
        router: Router,
        store: Rc<Store>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Rc<Shared> {
        let limits = router.limits().clone();
        Rc::new(Shared {
            router: RefCell::new(router),
            store,
            tls: RefCell::new(tls),
            next_id: Cell::new(1),
            // The thread-wide read buffer (`limits.read_chunk_bytes`): one read never takes
            // more from a socket, which also bounds how much one connection can make the
            // server do per wake-up.
            scratch: RefCell::new(vec![0u8; limits.read_chunk_bytes].into_boxed_slice()),
            admission: RefCell::new(Admission::new(&limits)),
            throttle: RefCell::new(Throttle::new(&limits)),
            auth_inflight: Arc::new(AtomicUsize::new(0)),
            logs: RefCell::new(Logs {
                full: RateLog::new(guard::WINDOW),
                preauth_full: RateLog::new(guard::WINDOW),
                per_address: RateLog::new(guard::WINDOW),
                budget: RateLog::new(guard::WINDOW),
                auth_queue: RateLog::new(guard::WINDOW),
            }),
        })
    }

    /// Number of open connections.
    pub fn open_connections(&self) -> usize {
        self.admission.borrow().open()
    }

    /// Logs a refused connection, at most once per minute per reason.
    fn log_refusal(&self, r: Refusal, peer: SocketAddr, now: Instant) {
        let mut logs = self.logs.borrow_mut();
        let log = match r {
            Refusal::Full => &mut logs.full,
            Refusal::PreAuthFull => &mut logs.preauth_full,
            Refusal::PerAddress => &mut logs.per_address,
        };
        if let Some(refused) = log.hit(now) {
            let admission = self.admission.borrow();
            tracing::warn!(
                refused,
                last_peer = %peer,
                open = admission.open(),
                unauthenticated = admission.preauth(),
                "refusing new connections: {}; {refused} refused since the last such line \
                 (one per minute)",
                r.reason()
            );
        }
    }

    /// Bookkeeping after each call into a session: authentication outcomes go to the
    /// throttle and the admission counters, and an unauthenticated connection's buffered
    /// bytes to the pre-auth budget; over budget, the stream is closed
    /// (`resource-constraint`).
    fn account(
        &self,
        ticket: &mut Ticket,
        session: &mut Session,
        out: &mut Vec<u8>,
        action: Action,
    ) -> Action {
        let now = Instant::now();
        match session.take_auth_event() {
            Some(AuthEvent::Failed) => {
                let f = self.throttle.borrow_mut().failed(ticket.key(), now);
                if f.log {
                    tracing::warn!(
                        addr = %ticket.key(),
                        failures = f.failures,
                        wait_ms = f.wait.as_millis() as u64,
                        "throttling {}: repeated failed logins; its unauthenticated input waits \
                         before it is read (limits.auth_throttle_base_ms, auth_throttle_max_ms; \
                         logged once per address and minute)",
                        ticket.key()
                    );
                }
            }
            // An anonymous login proves nothing about the address.
            Some(AuthEvent::Succeeded { anonymous: false }) => {
                self.throttle.borrow_mut().succeeded(ticket.key());
            }
            Some(AuthEvent::Succeeded { anonymous: true }) | None => {}
        }
        if !ticket.preauth() {
            return action;
        }
        if session.is_authenticated() {
            self.admission.borrow_mut().authenticated(ticket);
            return action;
        }
        if action == Action::Close {
            return action;
        }
        let held = session.held_bytes();
        if self.admission.borrow_mut().buffered(ticket, held) {
            return action;
        }
        if let Some(closed) = self.logs.borrow_mut().budget.hit(now) {
            tracing::warn!(
                closed,
                budget = self.router.borrow().limits().preauth_buffer_bytes,
                "unauthenticated connections buffer too much: closing the one that went over \
                 limits.preauth_buffer_bytes; {closed} closed since the last such line (one per \
                 minute)"
            );
        }
        session.refuse(
            StreamCondition::ResourceConstraint,
            "server busy: too much unauthenticated data buffered; try again later",
            &mut self.router.borrow_mut(),
            out,
        )
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
        // Counted here, before the task runs: a burst of accepts cannot overshoot.
        let admitted = shared.admission.borrow_mut().admit(AddrKey::of(peer.ip()));
        let mut ticket = match admitted {
            Ok(t) => t,
            Err(r) => {
                shared.log_refusal(r, peer, Instant::now());
                drop(stream);
                continue;
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        let sh = shared.clone();
        ex.spawn(async move {
            serve(&sh, stream, peer, direct_tls, &mut ticket).await;
            sh.admission.borrow_mut().release(ticket);
        })
        .detach();
    }
}

enum Wake {
    Read,
    Outbox,
    Deadline,
    /// The source address's throttle delay passed.
    Gate,
    /// The password check finished.
    Verified(bool),
}

/// Waits until `io` is readable (`true`; never while `no_read`) or `outbox` is ready
/// (`false`, see [`Outbox::ready`] for `paused`): what a connection task waits on besides
/// its timers.
pub(crate) async fn readable_or_ready(
    io: &Async<TcpStream>,
    no_read: bool,
    outbox: &Outbox,
    paused: bool,
) -> bool {
    smol::future::or(
        async {
            if no_read {
                std::future::pending::<()>().await;
            }
            let _ = io.readable().await;
            true
        },
        async {
            outbox.ready(paused).await;
            false
        },
    )
    .await
}

/// A server TLS session over `cfg`, or `None` (logged) if rustls cannot set one up.
fn tls_session(cfg: Arc<rustls::ServerConfig>) -> Option<Box<ServerConnection>> {
    match ServerConnection::new(cfg) {
        Ok(c) => Some(Box::new(c)),
        Err(e) => {
            tracing::error!(error = %e, "TLS session setup failed");
            None
        }
    }
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

/// Serve one connection until it closes. `ticket` is its share of the admission counters
/// (kept up to date here; the caller releases it).
async fn serve(
    shared: &Shared,
    io: Async<TcpStream>,
    peer: SocketAddr,
    direct_tls: bool,
    ticket: &mut Ticket,
) {
    let (limits, write_timeout, preauth_stanza_bytes, auth_queue) = {
        let r = shared.router.borrow();
        let l = r.limits();
        (
            l.xml_limits(),
            Duration::from_secs(l.write_timeout_secs),
            l.preauth_stanza_bytes(),
            l.auth_queue,
        )
    };
    let id = shared.next_id.get();
    shared.next_id.set(id + 1);
    let tls_cfg = shared.tls.borrow().clone();
    let mut conn = Conn { io, tls: None };
    if direct_tls {
        let Some(tls) = tls_cfg.clone().and_then(tls_session) else {
            return;
        };
        conn.tls = Some(tls);
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
    let mut session = Session::new(id, transport, limits, outbox.clone(), Instant::now())
        .with_preauth_stanza_bytes(preauth_stanza_bytes);
    tracing::debug!(conn = id, %peer, direct_tls, "connection opened");
    let mut out: Vec<u8> = Vec::new();
    let mut action = Action::Continue;
    // Input is buffered (framer, TLS session) because reading was paused.
    let mut held_input = false;
    // Read without waiting for the socket (after reading resumed).
    let mut read_now = false;
    // The password check on the blocking pool, while one runs (the socket is not read).
    let mut verifying: Option<smol::Task<bool>> = None;
    // Elements may be buffered in the framer that arrived while a password check ran.
    let mut resume_pending = false;
    loop {
        action = shared.account(ticket, &mut session, &mut out, action);
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
                let Some(tls) = tls_cfg.clone().and_then(tls_session) else {
                    break;
                };
                conn.tls = Some(tls);
                session.tls_established();
                action = Action::Continue;
            }
            Action::VerifyPassword => {
                action = Action::Continue;
                let Some(check) = session.take_password_check() else {
                    continue;
                };
                if shared.auth_inflight.load(Ordering::Relaxed) >= auth_queue {
                    if let Some(n) = shared.logs.borrow_mut().auth_queue.hit(Instant::now()) {
                        tracing::warn!(
                            refused = n,
                            auth_queue,
                            "password checks queue full (limits.auth_queue): answering \
                             temporary-auth-failure; {n} refused since the last such line (one \
                             per minute)"
                        );
                    }
                    action = session.on_password_verdict(
                        PasswordVerdict::Unavailable,
                        &mut shared.router.borrow_mut(),
                        &mut out,
                    );
                    resume_pending = true;
                    continue;
                }
                shared.auth_inflight.fetch_add(1, Ordering::Relaxed);
                let guard = Inflight(shared.auth_inflight.clone());
                verifying = Some(smol::unblock(move || {
                    let _guard = guard;
                    check.run()
                }));
            }
            Action::Continue => {}
        }
        if let Some(k) = outbox.kicked() {
            action = session.on_kick(k, &mut shared.router.borrow_mut(), &mut out);
            continue;
        }
        // After a failed login from this address, its unauthenticated input waits.
        let gate = if ticket.preauth() && verifying.is_none() {
            shared.throttle.borrow().gate(ticket.key(), Instant::now())
        } else {
            None
        };
        if gate.is_none()
            && !outbox.reading_paused()
            && verifying.is_none()
            && (held_input || resume_pending)
        {
            // Reading resumed: the input buffered while paused first, then the socket
            // (and any plaintext the TLS session still holds) without waiting for it.
            resume_pending = false;
            action = session.resume(&mut shared.router.borrow_mut(), &mut out);
            held_input = outbox.reading_paused();
            read_now = true;
            continue;
        }
        let deadline = session.deadline(&shared.router.borrow());
        // Back-pressure (see `Outbox::pause_reading`): while paused, the socket is not read
        // and only the outbox (which also signals the resumption) and the deadline count.
        // The same while a password check runs (its end counts too) or the address waits.
        let paused = outbox.reading_paused();
        let no_read = paused || verifying.is_some() || gate.is_some();
        let wake = if read_now && !no_read {
            Wake::Read
        } else {
            smol::future::or(
                async {
                    match verifying.as_mut() {
                        Some(task) => Wake::Verified(task.await),
                        // `no_read` holds while a check runs: the socket waits below.
                        None => std::future::pending().await,
                    }
                },
                smol::future::or(
                    async {
                        if readable_or_ready(&conn.io, no_read, &outbox, paused).await {
                            Wake::Read
                        } else {
                            Wake::Outbox
                        }
                    },
                    async {
                        match gate {
                            Some(g) if g < deadline => {
                                Timer::at(g).await;
                                Wake::Gate
                            }
                            _ => {
                                Timer::at(deadline).await;
                                Wake::Deadline
                            }
                        }
                    },
                ),
            )
            .await
        };
        read_now = false;
        match wake {
            Wake::Verified(ok) => {
                verifying = None;
                let verdict = if ok {
                    PasswordVerdict::Valid
                } else {
                    PasswordVerdict::Invalid
                };
                action =
                    session.on_password_verdict(verdict, &mut shared.router.borrow_mut(), &mut out);
                resume_pending = true;
            }
            Wake::Gate => {
                // Plaintext may wait in the TLS session; the socket may not signal again.
                read_now = true;
            }
            Wake::Read => {
                let res = {
                    let mut scratch = shared.scratch.borrow_mut();
                    conn.read_once(
                        &mut scratch,
                        |bytes| {
                            let a = session.receive(
                                bytes,
                                &mut shared.router.borrow_mut(),
                                &mut out,
                                Instant::now(),
                            );
                            shared.account(ticket, &mut session, &mut out, a)
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
                if session.flush_outbox(&mut out, Instant::now()) {
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
    let job = match shared.store.reopen_begin() {
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
    let reopened = shared.store.reopen_end(reopened);
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
    let mode = shared.store.pubsub_mode();
    if mode == CommitMode::Inline {
        return;
    }
    let work = || std::future::poll_fn(|cx| shared.store.pubsub_poll_work(cx));
    // Totals for the log line at stop: transactions (fsyncs), ops, and time spent in them.
    let (mut commits, mut total_ops, mut busy) = (0u64, 0u64, Duration::ZERO);
    let mut retry = RECOVERY_RETRY_MIN;
    loop {
        if shared.router.borrow().storage_needs_recovery() && !shared.store.pubsub_closing() {
            // The last write failed and reopening (or reloading) failed too: try again
            // after a pause that grows to RECOVERY_RETRY_MAX, watching for shutdown.
            let until = Instant::now() + retry;
            while Instant::now() < until && !shared.store.pubsub_closing() {
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
        let closing = shared.store.pubsub_closing();
        let batch = shared.store.pubsub_take();
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
