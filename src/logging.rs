//! Logging setup: the systemd journal when stderr is the journal (`JOURNAL_STREAM`); under
//! procd (`KINGLET_LOG_STREAMS=split`, set by the OpenWrt init script) info on stdout and
//! warnings on stderr without timestamps, which logd files as daemon.info / daemon.err;
//! else compact lines on stderr. Nothing is ever written to a log file: routers keep their
//! flash for data.
//!
//! The level comes from the config's `log_level` and is overridden by `RUST_LOG`; both use
//! the `tracing` "targets" syntax: `info` or `warn,kinglet::session=debug`. The level can be
//! changed while running ([`set_level`], used on SIGHUP) through tracing-subscriber's
//! `reload` layer; the filter sits directly on the registry so its handle has one type
//! whichever output (journal or stderr) was chosen.
//!
//! Lines are written by [`LineLayer`], a few dozen lines of our own instead of
//! tracing-subscriber's `fmt` layer: the daemon uses no spans and one line format, and the
//! `fmt` machinery (its formatters, time and ANSI support) cost about 40 KB of code on the
//! router builds (docs/size.md). A line is `2026-12-02T03:40:00.123Z  WARN message key=value`,
//! without the time under procd.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Handle on the installed filter; set once by [`init`].
static FILTER: OnceLock<reload::Handle<Targets, Registry>> = OnceLock::new();

/// Whether `RUST_LOG` overrides the configured level (set and not blank).
fn env_override() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Replace the active log filter with `config_level`, unless `RUST_LOG` overrides it.
/// Returns the directive now in effect.
///
/// # Errors
/// When `config_level` does not parse, or logging was never initialised; the old filter
/// stays in place.
pub fn set_level(config_level: &str) -> Result<String, String> {
    if let Some(env) = env_override() {
        return Ok(env);
    }
    let filter = parse_filter(config_level)?;
    let handle = FILTER
        .get()
        .ok_or_else(|| "logging is not initialised".to_owned())?;
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log level: {e}"))?;
    Ok(config_level.to_owned())
}

/// Parse a level directive (`info`, `warn,kinglet::router=debug`).
pub fn parse_filter(s: &str) -> Result<Targets, String> {
    s.parse::<Targets>()
        .map_err(|e| format!("invalid log level {s:?}: {e}"))
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` holds "device:inode" of
/// stderr when systemd set it up (systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Ok(v) = std::env::var("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(md) = std::fs::File::from(fd).metadata() else {
            return false;
        };
        journal_stream_matches(&v, md.dev(), md.ino())
    }
    #[cfg(not(unix))]
    false
}

/// Whether a `JOURNAL_STREAM` value ("device:inode", both decimal) names the file with
/// device `dev` and inode `ino`. Anything malformed is "no".
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Whether `KINGLET_LOG_STREAMS=split` asks for the OpenWrt/procd layout: info, debug and
/// trace lines on stdout, warnings and errors on stderr, no timestamps (the init script sets
/// it; procd has no marker of its own, unlike journald's `JOURNAL_STREAM`).
pub fn split_streams() -> bool {
    std::env::var("KINGLET_LOG_STREAMS").is_ok_and(|v| v == "split")
}

/// Install the global subscriber. `config_level` is used unless `RUST_LOG` is set.
/// Returns the effective directive, for the start-up log line.
pub fn init(config_level: &str) -> String {
    let directive = env_override().unwrap_or_else(|| config_level.to_owned());
    let filter = parse_filter(&directive).unwrap_or_else(|e| {
        eprintln!("kinglet: {e}; using \"info\"");
        Targets::new().with_default(tracing::Level::INFO)
    });
    let (filter, handle) = reload::Layer::new(filter);
    let _ = FILTER.set(handle);
    #[cfg(feature = "journald")]
    if stderr_is_journal() {
        if let Ok(j) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(j.with_syslog_identifier("kinglet".into()))
                .try_init();
            return directive;
        }
    }
    // Under procd: each stdout line becomes daemon.info and each stderr line daemon.err, and
    // logd adds its own timestamp.
    let lines = if split_streams() {
        LineLayer {
            time: false,
            split: true,
        }
    } else {
        LineLayer {
            time: true,
            split: false,
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init();
    directive
}

/// Writes each event as one line: `[time] LEVEL message key=value ...`.
struct LineLayer {
    /// Start with an RFC 3339 UTC time (milliseconds).
    time: bool,
    /// Info, debug and trace to stdout, warnings and errors to stderr (procd); else all to
    /// stderr.
    split: bool,
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let mut line = String::with_capacity(128);
        if self.time {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            line.push_str(&crate::pubsub::xep0082(ms));
            line.push(' ');
        }
        let _ = write!(line, "{:>5} ", level.as_str());
        event.record(&mut LineFields(&mut line));
        line.push('\n');
        // A log line that cannot be written (stderr closed) is dropped: nowhere to say so.
        if self.split && level > Level::WARN {
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        } else {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Appends an event's fields to a line: the message first, then ` key=value`.
struct LineFields<'a>(&'a mut String);

impl Visit for LineFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line format: message first, then the fields; strings quoted, others as Debug.
    #[test]
    fn line_fields_format() {
        struct Capture(std::sync::Arc<std::sync::Mutex<String>>);
        impl<S: Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
                let mut s = String::new();
                event.record(&mut LineFields(&mut s));
                *self.0.lock().expect("lock") = s;
            }
        }
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sub = tracing_subscriber::registry().with(Capture(out.clone()));
        tracing::subscriber::with_default(sub, || {
            let peer = "127.0.0.1:5222";
            tracing::warn!(peer, n = 3, "slow reader {}", "closed");
        });
        assert_eq!(
            *out.lock().expect("lock"),
            "slow reader closed peer=\"127.0.0.1:5222\" n=3"
        );
    }

    #[test]
    fn filters_parse() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,kinglet::router=debug").is_ok());
        assert!(parse_filter("kinglet=loud").is_err());
    }

    #[test]
    fn journal_stream_must_name_this_device_and_inode() {
        assert!(journal_stream_matches("64769:123456", 64769, 123456));
        assert!(!journal_stream_matches("64769:123457", 64769, 123456));
        assert!(!journal_stream_matches("64768:123456", 64769, 123456));
        for bad in [
            "",
            "64769",
            "64769:",
            ":123456",
            "x:1",
            "1:y",
            "1:2:3",
            " 64769:123456",
        ] {
            assert!(!journal_stream_matches(bad, 64769, 123456), "{bad:?}");
        }
    }
}
