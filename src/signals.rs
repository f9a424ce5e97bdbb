//! Unix signals: SIGTERM and SIGINT stop the daemon cleanly, SIGHUP reloads the TLS
//! certificate and the log level without dropping a session.
//!
//! Signals arrive through `async-signal` (smol-rs): its handler only writes to a pipe that
//! the async-io reactor watches, so all the work happens on the executor thread, next to the
//! state it touches. The crate is already in the dependency tree (smol → async-process), so
//! it adds no new crate.
//!
//! What a reload changes, and what it leaves alone:
//! - `[tls]`: the certificate and key files are read again (from the paths in the re-read
//!   configuration) and installed in [`Shared::tls`]; connections opened afterwards use
//!   them, open sessions keep the TLS state they negotiated.
//! - `log_level`: applied at once (unless `RUST_LOG` overrides it).
//! - Everything else (listeners, domain, data directory, limits) needs a restart; a reload
//!   that changes it logs a warning and keeps the running values.
//!
//! A reload that fails (unreadable file, bad key, invalid configuration) logs the error and
//! keeps the previous certificate and level: a typo must not take a running broker down.

use std::io;
use std::path::PathBuf;

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;

use crate::config::Config;
use crate::net::{self, Shared};
use crate::notify::{self, Notifier};

/// Why the daemon stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM (systemd, procd, `kill`).
    Term,
    /// SIGINT (Ctrl-C in a terminal).
    Int,
}

impl Stop {
    /// The signal's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
        }
    }
}

/// Register the handlers for SIGTERM, SIGINT and SIGHUP. From this call on those signals no
/// longer kill the process; [`run`] must consume them.
///
/// # Errors
/// When the handler or its pipe cannot be set up.
pub fn install() -> io::Result<Signals> {
    Signals::new([Signal::Term, Signal::Int, Signal::Hup])
}

/// What [`run`] needs to reload.
pub struct ReloadContext<'a> {
    /// The state shared with the connection tasks (its `tls` slot is replaced on reload).
    pub shared: &'a Shared,
    /// The configuration file to read again; `None` when the daemon runs on built-in
    /// defaults, in which case a reload has nothing to re-read but the TLS files.
    pub config_path: Option<PathBuf>,
    /// The configuration in force; updated with what a reload applied.
    pub current: Config,
    /// The service manager to tell about reloads, if any.
    pub notifier: Option<&'a Notifier>,
}

/// Handle signals until SIGTERM or SIGINT arrives; reload on each SIGHUP.
pub async fn run(mut signals: Signals, mut ctx: ReloadContext<'_>) -> Stop {
    loop {
        match signals.next().await {
            Some(Ok(Signal::Term)) => return Stop::Term,
            Some(Ok(Signal::Int)) => return Stop::Int,
            Some(Ok(Signal::Hup)) => {
                tracing::info!("SIGHUP: reloading TLS certificate and log level");
                send(ctx.notifier, "STATUS=reloading");
                let status = match reload(&mut ctx) {
                    Ok(summary) => {
                        tracing::info!("reload done: {summary}");
                        format!("reloaded: {summary}")
                    }
                    Err(e) => {
                        tracing::error!("reload failed, keeping the previous settings: {e}");
                        format!("reload failed: {e}")
                    }
                };
                send(ctx.notifier, &notify::status_line(&status));
            }
            Some(Ok(other)) => tracing::debug!(signal = ?other, "ignoring signal"),
            Some(Err(e)) => {
                // Reading the signal pipe failed: nothing sensible to do but keep listening.
                tracing::warn!(error = %e, "reading signals failed");
                async_io::Timer::after(std::time::Duration::from_millis(100)).await;
            }
            None => {
                // The stream never ends while `signals` lives; if it did, keep serving.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Send a notification if there is a service manager, logging (not failing) on error.
pub fn send(notifier: Option<&Notifier>, state: &str) {
    if let Some(n) = notifier {
        if let Err(e) = n.notify(state) {
            tracing::warn!(error = %e, state, "sd_notify failed");
        }
    }
}

/// Re-read the configuration (if it came from a file) and apply its TLS files and log level.
fn reload(ctx: &mut ReloadContext<'_>) -> Result<String, String> {
    let new = match &ctx.config_path {
        // TOML errors span several lines (a snippet with a caret); keep the log line one line.
        Some(p) => Config::load(Some(p)).map_err(|e| one_line(&e.to_string()))?,
        None => ctx.current.clone(),
    };
    let summary = apply(ctx.shared, &ctx.current, &new)?;
    ctx.current.tls = new.tls.clone().or(ctx.current.tls.take());
    ctx.current.log_level = new.log_level;
    Ok(summary)
}

/// `text` with its lines trimmed and joined by single spaces.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Apply `new`'s TLS files and log level over `current`. Nothing is changed unless the new
/// certificate loads; the level is applied only after that. Returns a one-line summary.
///
/// # Errors
/// A message naming what failed; the running TLS configuration and level are left alone.
pub fn apply(shared: &Shared, current: &Config, new: &Config) -> Result<String, String> {
    let mut parts = Vec::new();
    let tls = match &new.tls {
        Some(t) => Some((net::load_tls(&t.cert, &t.key)?, t.cert.clone())),
        None => {
            if current.tls.is_some() {
                tracing::warn!(
                    "[tls] was removed from the configuration: keeping TLS on until restart"
                );
            }
            None
        }
    };
    if let Some((cfg, cert)) = tls {
        *shared.tls.borrow_mut() = Some(cfg);
        parts.push(format!("certificate {}", cert.display()));
    }
    match crate::logging::set_level(&new.log_level) {
        Ok(level) => parts.push(format!("log level {level}")),
        Err(e) => tracing::warn!("{e}"),
    }
    let mut rest = new.clone();
    rest.tls = current.tls.clone();
    rest.log_level = current.log_level.clone();
    if rest != *current {
        tracing::warn!(
            "configuration changes other than [tls] and log_level take effect only after a restart"
        );
    }
    if parts.is_empty() {
        parts.push("nothing to reload".to_owned());
    }
    Ok(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tls;
    use crate::router::Router;
    use crate::store::Store;
    use crate::test_support::TempDir;
    use std::path::Path;
    use std::rc::Rc;

    fn cert(dir: &Path, name: &str) -> Tls {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let tls = Tls {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&tls.cert, ck.cert.pem()).unwrap();
        std::fs::write(&tls.key, ck.key_pair.serialize_pem()).unwrap();
        tls
    }

    fn shared(d: &Path, config: &Config) -> Rc<Shared> {
        let store = Rc::new(Store::open(&d.join("data"), 1 << 20).unwrap());
        let tls = config
            .tls
            .as_ref()
            .map(|t| net::load_tls(&t.cert, &t.key).unwrap());
        Shared::new(
            Router::new(
                Rc::new(config.clone()),
                store.clone(),
                Rc::new(crate::system::SystemEnv::new()),
            )
            .expect("router"),
            store,
            tls,
        )
    }

    /// A temp dir, a config with the certificate `old.example` and the shared state
    /// started on it.
    fn old_cert(tag: &str) -> (TempDir, Config, Rc<Shared>) {
        let d = TempDir::new(tag);
        let current = Config {
            tls: Some(cert(&d.0, "old.example")),
            ..Config::default()
        };
        let sh = shared(&d.0, &current);
        (d, current, sh)
    }

    #[test]
    fn reload_swaps_the_certificate() {
        let (d, current, sh) = old_cert("signals-swap");
        let before = sh.tls.borrow().clone().unwrap();
        let mut new = current.clone();
        new.tls = Some(cert(&d.0, "new.example"));
        let summary = apply(&sh, &current, &new).unwrap();
        assert!(summary.contains("new.example.crt"), "{summary}");
        let after = sh.tls.borrow().clone().unwrap();
        assert!(!std::sync::Arc::ptr_eq(&before, &after));
    }

    #[test]
    fn failed_reload_keeps_the_old_certificate() {
        let (d, current, sh) = old_cert("signals-bad");
        let before = sh.tls.borrow().clone().unwrap();
        let mut new = current.clone();
        let broken = d.0.join("broken.key");
        std::fs::write(&broken, "not a key").unwrap();
        new.tls = Some(Tls {
            cert: current.tls.as_ref().unwrap().cert.clone(),
            key: broken,
        });
        assert!(apply(&sh, &current, &new).is_err());
        let after = sh.tls.borrow().clone().unwrap();
        assert!(std::sync::Arc::ptr_eq(&before, &after));
    }

    #[test]
    fn removing_tls_keeps_it_until_restart() {
        let (_d, current, sh) = old_cert("signals-rm");
        let new = Config::default();
        apply(&sh, &current, &new).unwrap();
        assert!(sh.tls.borrow().is_some());
    }

    #[test]
    fn errors_become_one_line() {
        assert_eq!(one_line("a: b\n  |\n1 | x\n  ^\n"), "a: b | 1 | x ^");
    }

    #[test]
    fn stop_names() {
        assert_eq!(Stop::Term.name(), "SIGTERM");
        assert_eq!(Stop::Int.name(), "SIGINT");
    }
}
