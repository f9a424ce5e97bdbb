//! The configuration file: its schema, defaults, loading and validation.
//!
//! This module owns the TOML schema of `kinglet.toml` (every key optional, unknown keys
//! rejected), the built-in defaults (which equal the "defaults a new user meets" of the design:
//! loopback only, domain `localhost`, anonymous login on loopback only), path resolution
//! relative to the file, and [`Config::validate`], which names the offending key in every error.
//! It does not open sockets, read certificates or create the data directory: the daemon does
//! that at start, and `kinglet check-config` (in `cli`) checks the certificate files.
//! The reference for operators is `docs/configuration.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::limits::Limits;
use crate::sasl::{MAX_ITERATIONS, MIN_ITERATIONS};

/// Largest configuration file accepted, in bytes (a full file with comments is about 4 KiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most addresses accepted in each of `c2s.listen` and `c2s.direct_tls_listen`.
pub const MAX_LISTENERS: usize = 32;
/// Smallest accepted `store.cache_bytes` (64 KiB).
pub const MIN_CACHE_BYTES: usize = 64 * 1024;
/// Largest accepted `store.cache_bytes` (1 GiB, which is redb's own default).
pub const MAX_CACHE_BYTES: usize = 1024 * 1024 * 1024;
/// Longest accepted `store.flush_interval` (one hour).
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest non-zero `store.flush_interval` (10 ms).
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Longest accepted `log_level` string, in bytes.
pub const MAX_LOG_LEVEL_BYTES: usize = 1024;

/// The whole effective configuration of the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The XMPP domain served (the domainpart of every account JID). Lower-case DNS name or
    /// `localhost`. Default `localhost`; the pubsub service is `pubsub.<domain>`.
    pub domain: String,
    /// Directory holding the database file. Default `./kinglet-data` (relative to the working
    /// directory); a relative path written in a file is relative to that file's directory.
    #[serde(serialize_with = "serialize_path")]
    pub data_dir: PathBuf,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or a
    /// comma-separated list of `level` and `target=level` directives. Default `info`.
    /// The `RUST_LOG` environment variable overrides it.
    pub log_level: String,
    /// Client-to-server listeners and login policy (`[c2s]`).
    pub c2s: C2s,
    /// Certificate and key (`[tls]`); `None` when the section is absent, which turns off
    /// STARTTLS and direct TLS.
    pub tls: Option<Tls>,
    /// Authentication settings (`[auth]`).
    pub auth: Auth,
    /// Storage settings (`[store]`).
    pub store: StoreCfg,
    /// Resource bounds (`[limits]`).
    pub limits: Limits,
    /// The XEP-0060 publish-subscribe service (`[pubsub]`).
    pub pubsub: PubsubCfg,
    /// XEP-0114 component mode (`[component]`): `None` when the section is absent.
    pub component: Option<ComponentCfg>,
}

/// Shortest accepted `component.reconnect_max_secs`.
pub const MIN_RECONNECT_SECS: u64 = 1;
/// Longest accepted `component.reconnect_max_secs` (one hour).
pub const MAX_RECONNECT_SECS: u64 = 3600;

/// XEP-0114 component mode (`[component]` section): Kinglet connects to an XMPP server as
/// an external component and serves the pub-sub service at `jid` to that server's users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentCfg {
    /// The server's component port, `host:port` (for example `127.0.0.1:5347`).
    pub server: String,
    /// The component's JID, a domain the server routes to the component; the pub-sub
    /// service is served there (it replaces `pubsub.service`).
    pub jid: String,
    /// File holding the shared secret (its first line; surrounding whitespace is ignored).
    #[serde(serialize_with = "serialize_path")]
    pub secret_file: PathBuf,
    /// Longest pause between two connection attempts, in seconds (the pause starts at one
    /// second and doubles, with jitter). Default 60.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
}

fn default_reconnect_max_secs() -> u64 {
    60
}

/// Who may create pub-sub nodes (`pubsub.create_nodes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreatePolicy {
    /// Any account of this server, anonymous ones included (the default).
    Local,
    /// Only the JIDs listed in `pubsub.admins`.
    Admins,
    /// Any entity that can send the service a stanza.
    Anyone,
}

/// The publish-subscribe service (`[pubsub]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubsubCfg {
    /// The service JID. Empty (the default) means `pubsub.<domain>`. Must be a subdomain
    /// of `domain`.
    pub service: String,
    /// Who may create nodes. Default `local`.
    pub create_nodes: CreatePolicy,
    /// Bare JIDs that act as owners of every node and may always create nodes.
    /// Default empty; at most 64.
    pub admins: Vec<String>,
    /// XEP-0248: creating `a/b/c` (also by auto-create on publish) creates the missing
    /// collections `a` and `a/b` and attaches the node below them, so a subscriber of `a`
    /// gets every item published below it. Ids that are not clean paths (an empty
    /// segment, as in `http://…` URIs, or more than 16 segments) and paths through an
    /// existing leaf are created flat, as before. Default `true`.
    pub path_collections: bool,
    /// XEP-0163: configuration fields forced on PEP nodes of these names, as
    /// `node → { field (without `pubsub#`) → value }`, applied at creation and kept
    /// (an owner's configure that changes one is refused). Default: `storage:bookmarks`
    /// and `urn:xmpp:bookmarks:1` stay `access_model = "whitelist"`. At most 64 nodes of
    /// at most 16 fields each; values are checked at startup.
    pub pep_force: BTreeMap<String, BTreeMap<String, String>>,
}

/// Most nodes in `pubsub.pep_force`.
pub const MAX_PEP_FORCE: usize = 64;

impl Default for PubsubCfg {
    fn default() -> Self {
        let whitelist = || BTreeMap::from([("access_model".to_owned(), "whitelist".to_owned())]);
        PubsubCfg {
            service: String::new(),
            create_nodes: CreatePolicy::Local,
            admins: Vec::new(),
            path_collections: true,
            pep_force: BTreeMap::from([
                ("storage:bookmarks".to_owned(), whitelist()),
                ("urn:xmpp:bookmarks:1".to_owned(), whitelist()),
            ]),
        }
    }
}

/// Client-to-server listeners and login policy (`[c2s]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2s {
    /// Plain TCP listeners; STARTTLS is offered on them when `[tls]` is set.
    /// Default `["127.0.0.1:5222"]`.
    pub listen: Vec<SocketAddr>,
    /// XEP-0368 direct TLS listeners (TLS from the first byte, usually port 5223).
    /// Default empty. Requires `[tls]`.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Who may log in with SASL ANONYMOUS. Default `loopback`.
    pub allow_anonymous: AnonymousPolicy,
    /// Allow plain TCP listeners on non-loopback addresses without `[tls]`. Default `false`:
    /// such a configuration is rejected because passwords would cross the network in clear.
    pub allow_plaintext_public: bool,
    /// XEP-0198: how long a session whose connection dropped stays resumable (its resource
    /// bound, its presence unchanged, what is sent to it queued). `0` turns resumption off
    /// (acknowledgements still work). Default 300; at most 86400.
    pub resume_timeout_secs: u64,
    /// Most sessions with resumption enabled at once, attached or detached; a client
    /// beyond it gets stream management without resumption. Default 256; at most 65536.
    pub max_resumable_sessions: usize,
    /// Most stanzas a stream-managed session keeps: sent and not acknowledged while it is
    /// connected (its send window), unacknowledged and queued while it is detached (beyond
    /// it the detached session ends). Default 64; 1 to 65536.
    pub detached_max_stanzas: usize,
    /// Most bytes of stanza text, with the same meaning as `detached_max_stanzas`.
    /// Default 32768; 1024 to 16777216.
    pub detached_max_bytes: usize,
}

/// Longest `c2s.resume_timeout_secs` (one day).
pub const MAX_RESUME_TIMEOUT_SECS: u64 = 86_400;

/// Who may log in anonymously (SASL ANONYMOUS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousPolicy {
    /// Nobody.
    Never,
    /// Only clients connecting from a loopback address (the default).
    Loopback,
    /// Everybody who can reach a listener.
    Always,
}

impl AnonymousPolicy {
    /// Whether a client connecting from `peer` may log in anonymously.
    pub fn allows(self, peer: &SocketAddr) -> bool {
        match self {
            AnonymousPolicy::Never => false,
            AnonymousPolicy::Loopback => is_loopback(peer),
            AnonymousPolicy::Always => true,
        }
    }
}

/// Certificate and private key for STARTTLS and direct TLS (`[tls]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain, leaf first. Default `cert.pem`. After loading, a relative path
    /// has been resolved against the configuration file's directory.
    #[serde(serialize_with = "serialize_path")]
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Default `key.pem`, resolved like `cert`.
    #[serde(serialize_with = "serialize_path")]
    pub key: PathBuf,
}

/// Authentication settings (`[auth]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// PBKDF2 iteration count used when a password is set (existing accounts keep theirs).
    /// Default 10000; accepted range 4096..=1000000.
    pub scram_iterations: u32,
    /// Offer SASL PLAIN. Default `true`; it is only ever offered over TLS or on loopback.
    pub allow_plain: bool,
}

/// Storage settings (`[store]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreCfg {
    /// redb page cache size in bytes. Default 4194304 (4 MiB; redb's own default is 1 GiB).
    /// Accepted range 65536..=1073741824. Memory: at most this many bytes, once per process.
    pub cache_bytes: usize,
    /// Budget for all stored pub-sub items (payload, id, publisher and record overhead),
    /// in bytes. Default 33554432 (32 MiB); 0 means no budget (only per-node `max_items`).
    /// Accepted range 0 or 65536..=1099511627776.
    pub max_bytes: u64,
    /// What a publish does when the item budget is full. Default `evict-oldest`.
    pub full_policy: FullPolicy,
    /// How often pub-sub changes are flushed to disk. `0` (the default): durable group
    /// commit, every publish result means the item is on disk. A duration (`"500ms"`,
    /// `"5s"`, `"1m"`, or integer seconds): replies go out at once and changes are
    /// committed every interval and at a clean shutdown, so a power loss loses at most the
    /// last interval. Accepted: 0 or 10 ms..=1 h.
    pub flush_interval: FlushInterval,
}

/// `store.flush_interval`: integer seconds or a duration string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlushInterval {
    /// Whole seconds (`5`).
    Seconds(u64),
    /// A number with an optional unit `ms`, `s` or `m` (`"0"`, `"500ms"`, `"5s"`, `"1m"`).
    Text(String),
}

impl Default for FlushInterval {
    fn default() -> Self {
        FlushInterval::Seconds(0)
    }
}

impl FlushInterval {
    /// The interval; zero means durable group commit.
    ///
    /// # Errors
    ///
    /// A malformed string or a value outside 0 or 10 ms..=1 h, as a message for the operator.
    pub fn duration(&self) -> Result<Duration, String> {
        let d = match self {
            FlushInterval::Seconds(s) => Duration::from_secs(*s),
            FlushInterval::Text(t) => {
                let t = t.trim();
                let digits = t.bytes().take_while(u8::is_ascii_digit).count();
                let (num, unit) = t.split_at(digits);
                let n: u64 = num.parse().map_err(|_| {
                    format!(
                        "{t:?} is not a duration: write e.g. \"0\", \"500ms\", \"5s\" or \"1m\""
                    )
                })?;
                match unit.trim() {
                    "ms" => Duration::from_millis(n),
                    "" | "s" => Duration::from_secs(n),
                    "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
                    u => {
                        return Err(format!(
                            "unknown unit {u:?} in {t:?}: use ms, s or m (e.g. \"5s\")"
                        ));
                    }
                }
            }
        };
        if !d.is_zero() && !(MIN_FLUSH_INTERVAL..=MAX_FLUSH_INTERVAL).contains(&d) {
            return Err(format!(
                "{} ms is out of range: must be 0 (durable group commit) or between 10 ms and 1 h",
                d.as_millis()
            ));
        }
        Ok(d)
    }
}

/// What happens when `store.max_bytes` is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Delete the oldest stored items of the whole service (any node) until the new one fits.
    EvictOldest,
    /// Refuse the publish with `resource-constraint`.
    Reject,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".to_owned(),
            data_dir: PathBuf::from("./kinglet-data"),
            log_level: "info".to_owned(),
            c2s: C2s::default(),
            tls: None,
            auth: Auth::default(),
            store: StoreCfg::default(),
            limits: Limits::default(),
            pubsub: PubsubCfg::default(),
            component: None,
        }
    }
}

impl Default for C2s {
    fn default() -> Self {
        C2s {
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5222)],
            direct_tls_listen: Vec::new(),
            allow_anonymous: AnonymousPolicy::Loopback,
            allow_plaintext_public: false,
            resume_timeout_secs: 300,
            max_resumable_sessions: 256,
            detached_max_stanzas: 64,
            detached_max_bytes: 32 * 1024,
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: PathBuf::from("cert.pem"),
            key: PathBuf::from("key.pem"),
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            scram_iterations: 10_000,
            allow_plain: true,
        }
    }
}

impl Default for StoreCfg {
    fn default() -> Self {
        StoreCfg {
            cache_bytes: 4 * 1024 * 1024,
            max_bytes: 32 * 1024 * 1024,
            full_policy: FullPolicy::EvictOldest,
            flush_interval: FlushInterval::default(),
        }
    }
}

/// A configuration that cannot be used, with the key and file it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path of the offending setting (`c2s.listen`, `limits.max_stanza_bytes`),
    /// when known.
    pub key: Option<String>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
    /// The configuration file, when one was read.
    pub path: Option<PathBuf>,
}

impl ConfigError {
    /// An error about `key` without a file (the caller adds the file with [`Self::in_file`]).
    pub fn new(key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.map(str::to_owned),
            message: message.into(),
            path: None,
        }
    }

    /// The same error, attributed to the configuration file `path`.
    pub fn in_file(mut self, path: &Path) -> ConfigError {
        self.path = Some(path.to_path_buf());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}: ", path.display())?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Whether `addr` is a loopback address (127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Serialises a path as a TOML string; non-UTF-8 bytes are replaced (TOML has no other form).
/// `Ok` if `value` of setting `key` is within `min..=max`, else the error that says so.
fn check_range<T: Copy + PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::new(
        Some(key),
        format!("{value} is out of range: must be between {min} and {max}"),
    ))
}

fn serialize_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Joins a relative `path` onto `base`; absolute paths and a missing base leave it unchanged.
fn resolve(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}

/// Finds which top-level keys a document sets, to resolve only paths the file wrote.
#[derive(Deserialize)]
struct Present {
    data_dir: Option<serde::de::IgnoredAny>,
}

impl Config {
    /// Parses and validates a TOML document. Relative paths written in the document are
    /// resolved against `base_dir` (the configuration file's directory); the domain is
    /// lower-cased.
    ///
    /// # Errors
    ///
    /// TOML syntax errors, unknown keys, wrong types and every [`Config::validate`] failure,
    /// naming the key where it can be determined.
    pub fn from_toml_str(s: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(s).map_err(|e| {
            let text = e.to_string();
            ConfigError::new(
                toml_error_key(s, e.span()).as_deref(),
                text.trim_end().to_owned(),
            )
        })?;
        let data_dir_written = toml::from_str::<Present>(s)
            .map(|p| p.data_dir.is_some())
            .unwrap_or(false);
        if data_dir_written {
            config.data_dir = resolve(base_dir, &config.data_dir);
        }
        if let Some(c) = &mut config.component {
            c.secret_file = resolve(base_dir, &c.secret_file);
            c.jid.make_ascii_lowercase();
        }
        if let Some(tls) = &mut config.tls {
            tls.cert = resolve(base_dir, &tls.cert);
            tls.key = resolve(base_dir, &tls.key);
        }
        config.domain.make_ascii_lowercase();
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates the configuration file at `path`; `None` gives the built-in
    /// defaults. Relative paths in the file are resolved against the file's directory.
    ///
    /// # Errors
    ///
    /// An unreadable or oversized file, or any [`Config::from_toml_str`] error, with `path` set.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let config = Config::default();
            config.validate()?;
            return Ok(config);
        };
        let text = read_bounded(path).map_err(|e| e.in_file(path))?;
        Config::from_toml_str(&text, path.parent()).map_err(|e| e.in_file(path))
    }

    /// Checks every setting; does not touch the file system.
    ///
    /// # Errors
    ///
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_domain(&self.domain).map_err(|m| ConfigError::new(Some("domain"), m))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new(Some("data_dir"), "must not be empty"));
        }
        validate_log_level(&self.log_level).map_err(|m| ConfigError::new(Some("log_level"), m))?;
        self.validate_listeners()?;
        self.validate_component()?;
        self.validate_resumption()?;
        if let Some(tls) = &self.tls {
            if tls.cert.as_os_str().is_empty() {
                return Err(ConfigError::new(Some("tls.cert"), "must not be empty"));
            }
            if tls.key.as_os_str().is_empty() {
                return Err(ConfigError::new(Some("tls.key"), "must not be empty"));
            }
        }
        // The accepted range is the one SCRAM itself enforces (RFC 7677 asks for at least
        // 4096; each login costs this many HMACs on a small CPU).
        check_range(
            "auth.scram_iterations",
            self.auth.scram_iterations,
            MIN_ITERATIONS,
            MAX_ITERATIONS,
        )?;
        check_range(
            "store.cache_bytes",
            self.store.cache_bytes,
            MIN_CACHE_BYTES,
            MAX_CACHE_BYTES,
        )?;
        let budget = self.store.max_bytes;
        if budget != 0 && !(65_536..=1 << 40).contains(&budget) {
            return Err(ConfigError::new(
                Some("store.max_bytes"),
                format!(
                    "{budget} is out of range: must be 0 (no budget) or between 65536 and {}",
                    1u64 << 40
                ),
            ));
        }
        self.store
            .flush_interval
            .duration()
            .map_err(|m| ConfigError::new(Some("store.flush_interval"), m))?;
        self.validate_pubsub()?;
        self.limits
            .validate()
            .map_err(|(key, why)| ConfigError::new(Some(&key), why))
    }

    /// Checks the XEP-0198 keys of `[c2s]`.
    fn validate_resumption(&self) -> Result<(), ConfigError> {
        let c = &self.c2s;
        check_range(
            "c2s.resume_timeout_secs",
            c.resume_timeout_secs,
            0,
            MAX_RESUME_TIMEOUT_SECS,
        )?;
        check_range(
            "c2s.max_resumable_sessions",
            c.max_resumable_sessions,
            0,
            65_536,
        )?;
        check_range(
            "c2s.detached_max_stanzas",
            c.detached_max_stanzas,
            1,
            65_536,
        )?;
        check_range(
            "c2s.detached_max_bytes",
            c.detached_max_bytes,
            1024,
            1 << 24,
        )
    }

    /// The bounds of a detached session's unacknowledged and queued stanzas
    /// (`c2s.detached_max_*`).
    pub fn sm_bounds(&self) -> crate::outbox::SmBounds {
        crate::outbox::SmBounds {
            stanzas: self.c2s.detached_max_stanzas,
            bytes: self.c2s.detached_max_bytes,
        }
    }

    /// The send window of a stream-managed session: half of [`Config::sm_bounds`], so
    /// that a session whose connection drops with a full window still has room for what
    /// is sent to it while detached.
    pub fn sm_window(&self) -> crate::outbox::SmBounds {
        let b = self.sm_bounds();
        crate::outbox::SmBounds {
            stanzas: (b.stanzas / 2).max(1),
            bytes: (b.bytes / 2).max(1),
        }
    }

    /// Every global memory bound with its worst case ([`Limits::memory_budget`]) and the
    /// XEP-0198 ones of `[c2s]`: every connection's send window, and the queues of the
    /// detached sessions; in component mode also the remembered remote presences.
    pub fn memory_budget(&self) -> Vec<crate::limits::BudgetRow> {
        let mut t = crate::limits::Rows(self.limits.memory_budget(self.store.cache_bytes));
        let c = &self.c2s;
        let window = c.detached_max_bytes as u64;
        t.of(
            "c2s.detached_max_bytes",
            self.limits.max_connections,
            " connections",
            window,
            "XEP-0198 unacknowledged stanzas",
        );
        // A detached session's resource, registry entry and outbox besides its queue.
        const DETACHED_FIXED_BYTES: u64 = 1024;
        t.of(
            "c2s.max_resumable_sessions",
            c.max_resumable_sessions,
            " detached sessions",
            window.saturating_add(DETACHED_FIXED_BYTES),
            "XEP-0198 queues plus 1 KiB each",
        );
        if self.component.is_some() {
            // A remembered remote resource and its presence (JID, show, status).
            let n = self.limits.component_max_presences;
            t.times(
                "limits.component_max_presences",
                n,
                200,
                "remote presences in component mode",
            );
        }
        t.0
    }

    /// Checks `[component]`: a `host:port` server, a JID that is a domain other than
    /// ours, a secret file, a bounded reconnect pause.
    fn validate_component(&self) -> Result<(), ConfigError> {
        let Some(c) = &self.component else {
            return Ok(());
        };
        let port_ok = c
            .server
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !port_ok {
            return Err(ConfigError::new(
                Some("component.server"),
                format!(
                    "{:?} is not host:port (the server's component port, e.g. 127.0.0.1:5347)",
                    c.server
                ),
            ));
        }
        validate_domain(&c.jid).map_err(|m| {
            ConfigError::new(
                Some("component.jid"),
                format!("{m} (the component's domain, e.g. pubsub.example.net)"),
            )
        })?;
        if c.jid == self.domain || c.jid.ends_with(&format!(".{}", self.domain)) {
            return Err(ConfigError::new(
                Some("component.jid"),
                format!(
                    "{:?} is in Kinglet's own domain {:?}: set `domain` to a name of Kinglet's \
                     own (not the XMPP server's), e.g. kinglet.invalid",
                    c.jid, self.domain
                ),
            ));
        }
        if !self.pubsub.service.is_empty() {
            return Err(ConfigError::new(
                Some("pubsub.service"),
                "must not be set with [component]: the service is at component.jid",
            ));
        }
        if self.pubsub.create_nodes == CreatePolicy::Local {
            return Err(ConfigError::new(
                Some("pubsub.create_nodes"),
                "\"local\" (accounts of Kinglet's own domain) lets no user of the server \
                 create nodes in component mode: set \"anyone\" (whoever the server lets \
                 reach the component) or \"admins\" (pubsub.admins)",
            ));
        }
        if c.secret_file.as_os_str().is_empty() {
            return Err(ConfigError::new(
                Some("component.secret_file"),
                "must not be empty",
            ));
        }
        check_range(
            "component.reconnect_max_secs",
            c.reconnect_max_secs,
            MIN_RECONNECT_SECS,
            MAX_RECONNECT_SECS,
        )
    }

    /// Checks `[pubsub]`: the service is a subdomain of `domain` (or the component's JID),
    /// admins are bare JIDs.
    fn validate_pubsub(&self) -> Result<(), ConfigError> {
        let service = self.pubsub_service();
        let suffix = format!(".{}", self.domain);
        let label = service.strip_suffix(&suffix).unwrap_or("");
        if self.component.is_none() && (label.is_empty() || validate_domain(&service).is_err()) {
            return Err(ConfigError::new(
                Some("pubsub.service"),
                format!("{service:?} must be a valid subdomain of {:?}", self.domain),
            ));
        }
        if self.pubsub.admins.len() > 64 {
            return Err(ConfigError::new(
                Some("pubsub.admins"),
                "at most 64 admins are allowed",
            ));
        }
        for a in &self.pubsub.admins {
            match crate::jid::Jid::parse(a) {
                Ok(j) if j.is_bare() && j.local().is_some() => {}
                _ => {
                    return Err(ConfigError::new(
                        Some("pubsub.admins"),
                        format!("{a:?} is not a bare JID (user@domain)"),
                    ));
                }
            }
        }
        if self.pubsub.pep_force.len() > MAX_PEP_FORCE {
            return Err(ConfigError::new(
                Some("pubsub.pep_force"),
                format!("at most {MAX_PEP_FORCE} nodes may have forced fields"),
            ));
        }
        for (node, fields) in &self.pubsub.pep_force {
            if fields.len() > 16 {
                return Err(ConfigError::new(
                    Some("pubsub.pep_force"),
                    format!("{node:?}: at most 16 forced fields"),
                ));
            }
            let mut cfg = crate::pubsub::NodeConfig::pep_default(&self.limits);
            for (k, v) in fields {
                if matches!(k.as_str(), "node_type" | "collection" | "children") {
                    return Err(ConfigError::new(
                        Some("pubsub.pep_force"),
                        format!("{node:?}: {k} cannot be forced (PEP nodes are flat leaves)"),
                    ));
                }
                cfg.set(
                    &format!("pubsub#{k}"),
                    std::slice::from_ref(v),
                    &self.limits,
                )
                .map_err(|e| {
                    ConfigError::new(Some("pubsub.pep_force"), format!("{node:?}: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// Checks listener counts, duplicates, and that no password can cross a network in clear.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let c2s = &self.c2s;
        if c2s.listen.is_empty() && c2s.direct_tls_listen.is_empty() && self.component.is_none() {
            return Err(ConfigError::new(
                Some("c2s.listen"),
                "no listener: set c2s.listen or c2s.direct_tls_listen (or a [component] section)",
            ));
        }
        for (key, list) in [
            ("c2s.listen", &c2s.listen),
            ("c2s.direct_tls_listen", &c2s.direct_tls_listen),
        ] {
            if list.len() > MAX_LISTENERS {
                return Err(ConfigError::new(
                    Some(key),
                    format!(
                        "{} addresses; at most {MAX_LISTENERS} are allowed",
                        list.len()
                    ),
                ));
            }
        }
        let all: Vec<(&str, &SocketAddr)> = c2s
            .listen
            .iter()
            .map(|a| ("c2s.listen", a))
            .chain(
                c2s.direct_tls_listen
                    .iter()
                    .map(|a| ("c2s.direct_tls_listen", a)),
            )
            .collect();
        for (i, (key, addr)) in all.iter().enumerate() {
            // Port 0 asks the kernel for a fresh port each time, so it never collides.
            if addr.port() == 0 {
                continue;
            }
            for (_, earlier) in &all[..i] {
                if earlier.port() != addr.port() {
                    continue;
                }
                if earlier == addr {
                    return Err(ConfigError::new(
                        Some(key),
                        format!("{addr} is listed twice"),
                    ));
                }
                let same_family = earlier.is_ipv4() == addr.is_ipv4();
                if same_family && earlier.ip().is_unspecified() != addr.ip().is_unspecified() {
                    return Err(ConfigError::new(
                        Some(key),
                        format!(
                            "{earlier} and {addr} overlap: the wildcard address already \
                             listens on every address of its family, so the second bind fails"
                        ),
                    ));
                }
            }
        }
        if self.tls.is_none() {
            if !c2s.allow_plaintext_public {
                if let Some(addr) = c2s.listen.iter().find(|a| !is_loopback(a)) {
                    return Err(ConfigError::new(
                        Some("c2s.listen"),
                        format!(
                            "listening on {addr} without TLS exposes passwords; set [tls] \
                             cert/key or c2s.allow_plaintext_public = true"
                        ),
                    ));
                }
            }
            if !c2s.direct_tls_listen.is_empty() {
                return Err(ConfigError::new(
                    Some("c2s.direct_tls_listen"),
                    "direct TLS listeners need a certificate: set [tls] cert and key",
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, every key present (an absent `[tls]` section is
    /// noted in a comment). Parsing the result with [`Config::from_toml_str`] gives an equal
    /// `Config` for every valid configuration whose paths are UTF-8.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# Effective kinglet configuration.\n");
        match toml::to_string(self) {
            Ok(body) => out.push_str(&body),
            // Only reachable for values validate() rejects (integers beyond i64::MAX).
            Err(e) => out.push_str(&format!("# cannot render the configuration: {e}\n")),
        }
        if self.tls.is_none() {
            out.push_str(
                "\n# [tls] is not set: STARTTLS and direct TLS are off.\n\
                 # [tls]\n# cert = \"cert.pem\"\n# key = \"key.pem\"\n",
            );
        }
        out
    }

    /// The JID of the pubsub service: `component.jid` in component mode, else
    /// `pubsub.service`, or `pubsub.<domain>` when unset.
    pub fn pubsub_service(&self) -> String {
        if let Some(c) = &self.component {
            c.jid.to_ascii_lowercase()
        } else if self.pubsub.service.is_empty() {
            format!("pubsub.{}", self.domain)
        } else {
            self.pubsub.service.to_ascii_lowercase()
        }
    }
}

/// Reads a UTF-8 text file of at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ConfigError::new(None, format!("cannot open: {e}")))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ConfigError::new(None, format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::new(
            None,
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(text)
}

/// Checks that `domain` is a lower-case ASCII DNS name (or `localhost`).
fn validate_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if domain.len() > 253 {
        return Err(format!(
            "is {} bytes long; a DNS name has at most 253",
            domain.len()
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        let hint = if c.is_ascii_uppercase() {
            " (domains are lower-case)"
        } else if !c.is_ascii() {
            " (write internationalised names in their xn-- form)"
        } else {
            ""
        };
        return Err(format!(
            "{domain:?} contains {c:?}; a domain is a DNS name such as example.org{hint}"
        ));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(format!(
                "{domain:?} has an empty label (leading, trailing or doubled dot)"
            ));
        }
        if label.len() > 63 {
            return Err(format!("{domain:?} has a label longer than 63 bytes"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "{domain:?} has a label starting or ending with '-'"
            ));
        }
    }
    Ok(())
}

/// The level words a log filter may use.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Checks a log filter: comma-separated `level` or `target=level` directives, the subset of
/// tracing-subscriber's `Targets` syntax that cannot silently mean something else (a bare
/// word is a target there, so `inf` would enable tracing for a target named `inf`).
fn validate_log_level(filter: &str) -> Result<(), String> {
    if filter.len() > MAX_LOG_LEVEL_BYTES {
        return Err(format!("longer than {MAX_LOG_LEVEL_BYTES} bytes"));
    }
    if filter.chars().any(char::is_whitespace) {
        return Err(format!(
            "{filter:?} contains whitespace; write directives without spaces, \
             for example \"info,kinglet::net=debug\""
        ));
    }
    let level_ok = |w: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w));
    for directive in filter.split(',') {
        if directive.is_empty() {
            return Err(format!("{filter:?} has an empty directive"));
        }
        let level = match directive.split_once('=') {
            Some((target, level)) => {
                let ok_char =
                    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.');
                if target.is_empty() || !target.chars().all(ok_char) {
                    return Err(format!(
                        "{directive:?}: the target must be a module path such as kinglet::net"
                    ));
                }
                level
            }
            None => directive,
        };
        if !level_ok(level) {
            return Err(format!(
                "unknown level {level:?}: use error, warn, info, debug, trace or off, \
                 optionally as target=level (for example \"info,kinglet::net=debug\")"
            ));
        }
    }
    Ok(())
}

/// Best-effort dotted key path for a TOML error located at `span` in `src`.
///
/// toml reports the span of the offending key (unknown field) or value (bad type); this maps
/// it to `table.key` by looking at the line it starts on and the last table header above it.
fn toml_error_key(src: &str, span: Option<std::ops::Range<usize>>) -> Option<String> {
    let start = span?.start.min(src.len());
    let start = (0..=start).rev().find(|i| src.is_char_boundary(*i))?;
    let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
    let mut table: Option<String> = None;
    let mut key: Option<String> = None;
    for line in src[..line_start].lines() {
        if let Some(name) = header_name(line) {
            table = Some(name);
            key = None;
        } else if let Some(k) = line_key(line) {
            key = Some(k);
        }
    }
    let current = src[line_start..].lines().next().unwrap_or("");
    if let Some(name) = header_name(current) {
        // The header itself is the problem (an unknown table such as `[tsl]`).
        return Some(name);
    }
    // On a `key = value` line the key is on this line; otherwise we are inside a multi-line
    // value whose key was the last one seen.
    let key = line_key(current).or(key)?;
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

/// The table name of a `[name]` or `[[name]]` header line.
fn header_name(line: &str) -> Option<String> {
    let line = strip_comment(line).trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.trim_start_matches('[').trim_end_matches(']').trim();
    let valid = !inner.is_empty()
        && inner
            .chars()
            // `:` and `/` occur in quoted node names (`[pubsub.pep_force."urn:xmpp:…"]`).
            .all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' ' | ':' | '/')
            });
    valid.then(|| unquote_path(inner))
}

/// The (possibly dotted) key of a `key = value` line.
fn line_key(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' '));
    valid.then(|| unquote_path(key))
}

/// `a . "b"` → `a.b`.
fn unquote_path(s: &str) -> String {
    s.split('.')
        .map(|part| part.trim().trim_matches('"'))
        .collect::<Vec<_>>()
        .join(".")
}

/// The part of a line before a `#` comment (a `#` inside a string is rare in headers/keys).
fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(before, _)| before)
}

#[cfg(test)]
mod tests;
