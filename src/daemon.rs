//! Process wiring: open the store, load TLS, bind the listeners and run everything on one
//! `LocalExecutor` (all protocol state on one thread; async-io's reactor helper thread is
//! the only other thread).

use std::net::TcpListener;
use std::rc::Rc;

use async_io::Async;
use smol::LocalExecutor;

use crate::config::{Config, is_loopback};
use crate::net::{self, Shared};
use crate::router::Router;
use crate::store::Store;

/// Start-up failures, each with the sysexits code the process exits with.
#[derive(Debug)]
pub enum StartupError {
    /// Configuration problem found at start (missing certificate...): exit 78.
    Config(String),
    /// The store could not be opened.
    Store(crate::store::StoreError),
    /// A listening socket could not be bound: exit 71 (EX_OSERR).
    Bind(String),
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(m) => write!(f, "configuration: {m}"),
            Self::Store(e) => write!(f, "store: {e}"),
            Self::Bind(m) => write!(f, "{m}"),
        }
    }
}

impl StartupError {
    /// sysexits(3) code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => 78,
            Self::Store(e) => e.exit_code(),
            Self::Bind(_) => 71,
        }
    }
}

/// Run the broker until the process is killed.
pub fn run(config: Config) -> Result<(), StartupError> {
    let tls = match &config.tls {
        Some(t) => Some(net::load_tls(&t.cert, &t.key).map_err(StartupError::Config)?),
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
            println!(
                "LISTENING {} {}",
                if direct { "direct_tls" } else { "c2s" },
                bound
            );
        }
        listeners.push((l, direct));
    }
    let config = Rc::new(config);
    tracing::info!(domain = %config.domain, data = %store.path().display(), "kinglet {} started", env!("CARGO_PKG_VERSION"));
    let shared = Shared::new(Router::new(config.clone(), store), tls);
    let ex: Rc<LocalExecutor<'static>> = Rc::new(LocalExecutor::new());
    for (l, direct) in listeners {
        ex.spawn(net::listen(ex.clone(), shared.clone(), l, direct))
            .detach();
    }
    async_io::block_on(ex.run(std::future::pending::<()>()));
    Ok(())
}
