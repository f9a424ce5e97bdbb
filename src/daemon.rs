//! Process wiring: open the store, load TLS, bind the listeners and run everything on one
//! `LocalExecutor` (all protocol state on one thread; async-io's reactor helper thread is
//! the only other thread).
//!
//! Life cycle, as a service manager sees it:
//! 1. signal handlers installed, store opened, TLS loaded, listeners bound;
//! 2. `READY=1` to `NOTIFY_SOCKET` (systemd `Type=notify`; a no-op under procd or a shell),
//!    and a watchdog task pinging `WATCHDOG=1` every `WATCHDOG_USEC / 2` from the event loop;
//! 3. SIGHUP reloads the TLS certificate and log level ([`crate::signals`]);
//! 4. SIGTERM or SIGINT: `STOPPING=1`, the listeners close, the pub-sub committer commits
//!    what is pending and stops, every connection task is dropped (closing its socket), the
//!    last staged changes are flushed, the store is closed cleanly, and [`run`] returns
//!    `Ok`, so the process exits 0 well within procd's 5 s `term_timeout`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use async_io::{Async, Timer};
use smol::LocalExecutor;

use crate::config::{Config, is_loopback};
use crate::net::{self, Shared};
use crate::notify::{self, Notifier};
use crate::router::Router;
use crate::signals;
use crate::store::{CommitMode, Store};
use crate::system::SystemEnv;

/// Start-up failures, each with the sysexits code the process exits with.
#[derive(Debug)]
pub enum StartupError {
    /// Configuration problem found at start (missing certificate...): exit 78.
    Config(String),
    /// The store could not be opened.
    Store(crate::store::StoreError),
    /// A listening socket could not be bound: exit 71 (EX_OSERR).
    Bind(String),
    /// Another operating-system resource (signal handlers) could not be set up: exit 71.
    Os(String),
    /// The pub-sub state in the database (`path`) cannot be loaded: the store's code, 65
    /// for a stored node this build cannot read.
    PubSub {
        /// What failed.
        error: crate::pubsub::EngineError,
        /// The database file.
        path: PathBuf,
    },
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(m) => write!(f, "configuration: {m}"),
            Self::Store(e) => write!(f, "store: {e}"),
            Self::Bind(m) => write!(f, "{m}"),
            Self::Os(m) => write!(f, "{m}"),
            Self::PubSub { error, path } => {
                write!(
                    f,
                    "the pub-sub state cannot be loaded, so kinglet does not start: {error}. "
                )?;
                match self.exit_code() {
                    crate::exit::EX_DATAERR => write!(
                        f,
                        "{} is damaged or was written by a newer kinglet: restore it from a \
                         backup, or run the newer version (docs/operations.md, exit codes)",
                        path.display()
                    ),
                    crate::exit::EX_IOERR => write!(
                        f,
                        "check the permissions of and free space for {}",
                        path.display()
                    ),
                    _ => write!(f, "report a bug with this message and the log"),
                }
            }
        }
    }
}

impl StartupError {
    /// sysexits(3) code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => crate::exit::EX_CONFIG,
            Self::Store(e) => e.exit_code(),
            Self::Bind(_) | Self::Os(_) => crate::exit::EX_OSERR,
            Self::PubSub { error, .. } => match error {
                crate::pubsub::EngineError::Store(e) => e.exit_code(),
                crate::pubsub::EngineError::BadNode(..) => crate::exit::EX_DATAERR,
            },
        }
    }
}

/// Run the broker on `config` until SIGTERM or SIGINT. SIGHUP keeps the TLS files and log
/// level of `config` (there is no file to re-read); see [`run_with_reload`].
///
/// # Errors
/// A [`StartupError`] when the store, TLS, listeners or signal handlers cannot be set up.
pub fn run(config: Config) -> Result<(), StartupError> {
    run_with_reload(config, None)
}

/// Makes every panic, on any thread, end the process after printing its message, whatever
/// the build's panic strategy. Host release builds unwind (so that tests share their
/// dependencies); a panic that only unwound one thread (the store's writer, the blocking
/// pool) would leave a daemon that accepts clients but never commits. Aborting lets systemd
/// or procd restart it on the intact store.
pub fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

/// Run the broker until SIGTERM or SIGINT; SIGHUP re-reads `config_path` (when given) and
/// applies its TLS files and log level. Returns `Ok` after a clean shutdown.
///
/// # Errors
/// A [`StartupError`] when the store, TLS, listeners or signal handlers cannot be set up.
pub fn run_with_reload(config: Config, config_path: Option<PathBuf>) -> Result<(), StartupError> {
    abort_on_panic();
    // First, so that a signal arriving during start-up is queued rather than fatal (SIGHUP's
    // default action is to terminate); it is handled once the executor runs.
    let signals = signals::install()
        .map_err(|e| StartupError::Os(format!("cannot install signal handlers: {e}")))?;
    let tls = match &config.tls {
        Some(t) => Some(net::load_tls(&t.cert, &t.key).map_err(StartupError::Config)?),
        None => None,
    };
    let component = match &config.component {
        Some(c) => Some((
            c.clone(),
            net::component::read_secret(&c.secret_file).map_err(StartupError::Config)?,
        )),
        None => None,
    };
    let store =
        Store::open(&config.data_dir, config.store.cache_bytes).map_err(StartupError::Store)?;
    let mut listeners = Vec::new();
    for (addr, direct) in config
        .c2s
        .listen
        .iter()
        .map(|a| (a, false))
        .chain(config.c2s.direct_tls_listen.iter().map(|a| (a, true)))
    {
        let l = TcpListener::bind(addr).map_err(|e| {
            StartupError::Bind(format!(
                "cannot listen on {addr}: {e} (is another XMPP server running? change c2s.listen)"
            ))
        })?;
        let l = Async::new(l)
            .map_err(|e| StartupError::Bind(format!("cannot register {addr}: {e}")))?;
        let bound = l
            .get_ref()
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            listen = %bound,
            tls = if direct { "direct" } else if tls.is_some() { "starttls" } else { "none" },
            public = !is_loopback(addr),
            "listening"
        );
        // Machine-readable line for tests and scripts that ask for port 0.
        if std::env::var_os("KINGLET_PRINT_PORTS").is_some() {
            // A closed stdout (the reader went away) must not take the broker down:
            // `println!` would panic on EPIPE.
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "LISTENING {} {}",
                if direct { "direct_tls" } else { "c2s" },
                bound
            )
            .and_then(|()| out.flush());
        }
        listeners.push((l, direct));
    }
    let notifier = match Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "NOTIFY_SOCKET is unusable: not notifying the service manager");
            None
        }
    };
    let reload_config = config.clone();
    let config = Rc::new(config);
    tracing::info!(domain = %config.domain, data = %store.path().display(), "kinglet {} started", env!("CARGO_PKG_VERSION"));
    // Pub-sub changes are committed off the event loop ([`net::committer`]).
    let every = config.store.flush_interval.duration().unwrap_or_default();
    store.pubsub_set_mode(if every.is_zero() {
        CommitMode::Group
    } else {
        CommitMode::Interval(every)
    });
    store.pubsub_set_batch_limits(
        config.limits.commit_batch_ops,
        config.limits.commit_batch_bytes,
    );
    let path = store.path().to_owned();
    let store = Rc::new(store);
    let router = Router::new(config.clone(), store.clone(), Rc::new(SystemEnv::new()))
        .map_err(|error| StartupError::PubSub { error, path })?;
    let shared = Shared::new(router, store, tls);
    let ex: Rc<LocalExecutor<'static>> = Rc::new(LocalExecutor::new());
    // Invariant: the listener tasks are the only holders of `ex` besides this function; they
    // are cancelled at shutdown so that the executor, and with it every connection task and
    // `shared`, is dropped.
    let mut tasks = Vec::new();
    for (l, direct) in listeners {
        tasks.push(ex.spawn(net::listen(ex.clone(), shared.clone(), l, direct)));
    }
    if let Some((cfg, secret)) = component {
        tracing::info!(server = %cfg.server, jid = %cfg.jid, "component mode: connecting to the server");
        tasks.push(ex.spawn(net::component::run(shared.clone(), cfg, secret)));
    }
    let committer = ex.spawn(net::committer(shared.clone()));
    let (wake_tx, wake) = smol::channel::bounded(1);
    shared
        .router
        .borrow_mut()
        .set_pubsub_waker(Box::new(move || {
            let _ = wake_tx.try_send(());
        }));
    tasks.push(ex.spawn(pubsub_timer(shared.clone(), wake)));
    let sm_signal = Rc::new(SmSignal::default());
    let signal = sm_signal.clone();
    shared
        .router
        .borrow_mut()
        .set_sm_waker(Rc::new(move || signal.raise()));
    tasks.push(ex.spawn(sm_timer(shared.clone(), sm_signal)));
    let notifier = notifier.map(Rc::new);
    if let (Some(n), Some(every)) = (&notifier, notify::watchdog_interval()) {
        tracing::info!(
            interval_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
        tasks.push(ex.spawn(watchdog(n.clone(), every)));
    }
    let n = notifier.as_deref();
    signals::send(
        n,
        &format!(
            "READY=1\n{}",
            notify::status_line(&format!("serving {}", config.domain))
        ),
    );
    let stop = async_io::block_on(ex.run(signals::run(
        signals,
        signals::ReloadContext {
            shared: &shared,
            config_path,
            current: reload_config,
            notifier: n,
        },
    )));
    tracing::info!(
        signal = stop.name(),
        connections = shared.open_connections(),
        "shutting down"
    );
    signals::send(n, "STOPPING=1\nSTATUS=shutting down");
    async_io::block_on(ex.run(async {
        for t in tasks {
            t.cancel().await;
        }
        // The committer finishes the commit in flight, commits what is pending and stops.
        shared.store.pubsub_close();
        committer.await;
    }));
    // Dropping the executor drops every remaining (connection) task: their sockets close and
    // their handles on `shared` go away, so the router and the store are dropped below.
    drop(ex);
    // Changes staged while the committer stopped (connections were still served).
    match shared.store.pubsub_flush() {
        Ok(0) => {}
        Ok(ops) => tracing::info!(ops, "flushed the last pub-sub changes"),
        Err(e) => tracing::error!(error = %e, "the last pub-sub changes could not be saved"),
    }
    match Rc::try_unwrap(shared) {
        Ok(shared) => drop(shared),
        Err(_) => tracing::warn!("shared state still referenced at shutdown"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The pub-sub expiry timer (XEP-0060 `item_expire` and leased subscriptions): sleeps
/// until the engine's next deadline, or until the router says it moved earlier.
async fn pubsub_timer(shared: Rc<net::Shared>, wake: smol::channel::Receiver<()>) {
    loop {
        let next = shared.router.borrow_mut().pubsub_tick();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // With nothing due, only the router's wake-up ends the wait (no idle wake-ups).
        let timer = match next {
            Some(d) => Timer::after(Duration::from_millis(d.saturating_sub(now).max(1))),
            None => Timer::never(),
        };
        smol::future::or(
            async {
                timer.await;
            },
            async {
                // A closed channel (no router any more) must not spin the loop.
                if wake.recv().await.is_err() {
                    std::future::pending::<()>().await;
                }
            },
        )
        .await;
    }
}

/// The XEP-0198 timer's wake-up: raised by the router (a session detached, a detached
/// outbox overflowed), awaited by [`sm_timer`]. Raising it never blocks or allocates.
#[derive(Default)]
struct SmSignal {
    raised: std::cell::Cell<bool>,
    waker: std::cell::Cell<Option<std::task::Waker>>,
}

impl SmSignal {
    fn raise(&self) {
        self.raised.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.raised.replace(false) {
                std::task::Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// The XEP-0198 timer: ends detached sessions whose resumption window passed or whose
/// queue overflowed ([`Router::sm_tick`]), sleeping until the next window ends or the
/// router raises the signal.
async fn sm_timer(shared: Rc<net::Shared>, signal: Rc<SmSignal>) {
    loop {
        let next = shared.router.borrow_mut().sm_tick();
        let timer = match next {
            Some(d) => Timer::after(d.max(Duration::from_millis(1))),
            None => Timer::never(),
        };
        smol::future::or(
            async {
                timer.await;
            },
            signal.wait(),
        )
        .await;
    }
}

/// Ping the systemd watchdog every `every`, from the executor thread: if the event loop
/// wedges, the pings stop and systemd restarts the service.
async fn watchdog(notifier: Rc<Notifier>, every: Duration) {
    loop {
        Timer::after(every).await;
        if let Err(e) = notifier.notify("WATCHDOG=1") {
            tracing::warn!(error = %e, "watchdog ping failed");
        }
    }
}
