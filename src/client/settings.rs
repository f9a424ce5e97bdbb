//! Connection settings of the client commands: the common flags ([`ConnectArgs`]) resolved
//! into one [`Settings`] (server address, XMPP domain, pubsub service, credentials, TLS mode).
//!
//! Defaults: the embedded default broker, `localhost:5222`, domain `localhost`, anonymous
//! login, service `pubsub.<domain>`, STARTTLS when offered.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::ConnectArgs;
use crate::jid::Jid;

use super::ClientError;

/// Default client-to-server port (RFC 6120 §14.7).
pub const DEFAULT_PORT: u16 = 5222;
/// Default port for direct TLS (XEP-0368 convention).
pub const DEFAULT_DIRECT_TLS_PORT: u16 = 5223;
/// Default timeout for connecting and for each reply, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Longest accepted `--timeout`, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Longest accepted resource, in bytes (RFC 7622 §3.4).
const MAX_RESOURCE_BYTES: usize = 1023;

/// When to use TLS (`--tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when the server offers it; plaintext only if it does not and the server
    /// address is a loopback address (the default).
    Auto,
    /// STARTTLS, required.
    StartTls,
    /// TLS from the first byte (XEP-0368), default port 5223.
    Direct,
    /// Never TLS (even if offered); PLAIN is then refused.
    Off,
}

impl TlsMode {
    /// Parses the `--tls` value.
    ///
    /// # Errors
    ///
    /// A usage error naming the accepted values.
    pub fn parse(s: &str) -> Result<TlsMode, ClientError> {
        match s {
            "auto" => Ok(TlsMode::Auto),
            "starttls" => Ok(TlsMode::StartTls),
            "direct" => Ok(TlsMode::Direct),
            "off" | "none" => Ok(TlsMode::Off),
            other => Err(ClientError::Usage(format!(
                "--tls {other}: expected auto, starttls, direct or off"
            ))),
        }
    }
}

/// How to log in.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// SASL ANONYMOUS (no `--jid`).
    Anonymous,
    /// SCRAM-SHA-256, SCRAM-SHA-1 or (over TLS only) PLAIN with this account.
    Password {
        /// The localpart (SASL username).
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
        }
    }
}

/// Everything needed to open (and re-open) a stream.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The XMPP domain (stream `to`, TLS server name).
    pub domain: String,
    /// The pubsub service JID.
    pub service: String,
    /// Login.
    pub auth: Auth,
    /// Resource to bind.
    pub resource: String,
    /// TLS policy.
    pub tls: TlsMode,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--insecure`.
    pub insecure: bool,
    /// Connect and reply timeout.
    pub timeout: Duration,
    /// The rustls configuration, built on first use and kept for reconnects.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl Settings {
    /// Resolves the common flags.
    ///
    /// # Errors
    ///
    /// Usage errors (bad `--server`, `--jid`, `--tls`, `--timeout`, a JID without a
    /// password source, `--ca-file` with `--insecure`); an unreadable password file.
    pub fn resolve(a: &ConnectArgs) -> Result<Settings, ClientError> {
        let tls = TlsMode::parse(a.tls.as_deref().unwrap_or("auto"))?;
        let jid = match &a.jid {
            Some(j) => {
                let jid =
                    Jid::parse(j).map_err(|e| ClientError::Usage(format!("--jid {j}: {e}")))?;
                if jid.local().is_none() {
                    return Err(ClientError::Usage(format!(
                        "--jid {j}: needs a user part (user@domain)"
                    )));
                }
                Some(jid)
            }
            None => None,
        };
        let default_port = if tls == TlsMode::Direct {
            DEFAULT_DIRECT_TLS_PORT
        } else {
            DEFAULT_PORT
        };
        let (host, port) = match &a.server {
            Some(s) => parse_server(s, default_port)?,
            None => (
                jid.as_ref().map_or("localhost", |j| j.domain()).to_owned(),
                default_port,
            ),
        };
        let domain = match (&a.domain, &jid) {
            (Some(d), _) => d.to_ascii_lowercase(),
            (None, Some(j)) => j.domain().to_owned(),
            (None, None) if host.parse::<std::net::IpAddr>().is_err() => host.to_ascii_lowercase(),
            (None, None) => "localhost".to_owned(),
        };
        if domain.is_empty() || Jid::new(None, &domain, None).is_err() {
            return Err(ClientError::Usage(format!("bad XMPP domain '{domain}'")));
        }
        let service = a
            .service
            .clone()
            .unwrap_or_else(|| format!("pubsub.{domain}"));
        let auth = match &jid {
            None => {
                if a.password_file.is_some() || a.password_env.is_some() {
                    return Err(ClientError::Usage(
                        "a password is given but no --jid".to_owned(),
                    ));
                }
                Auth::Anonymous
            }
            Some(j) => Auth::Password {
                user: j.local().unwrap_or_default().to_owned(),
                password: read_password(a)?,
            },
        };
        let resource = match (&a.resource, jid.as_ref().and_then(Jid::resource)) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) => r.to_owned(),
            (None, None) => format!("kinglet-{}", std::process::id()),
        };
        if resource.is_empty() || resource.len() > MAX_RESOURCE_BYTES {
            return Err(ClientError::Usage(
                "--resource must be 1 to 1023 bytes".to_owned(),
            ));
        }
        let secs = a.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if secs == 0 || secs > MAX_TIMEOUT_SECS {
            return Err(ClientError::Usage(format!(
                "--timeout must be 1 to {MAX_TIMEOUT_SECS} seconds"
            )));
        }
        if a.insecure && a.ca_file.is_some() {
            return Err(ClientError::Usage(
                "--insecure and --ca-file exclude each other".to_owned(),
            ));
        }
        if tls == TlsMode::Off && (a.insecure || a.ca_file.is_some()) {
            return Err(ClientError::Usage(
                "--tls off with a TLS option (--ca-file, --insecure)".to_owned(),
            ));
        }
        Ok(Settings {
            host,
            port,
            domain,
            service,
            auth,
            resource,
            tls,
            ca_file: a.ca_file.clone(),
            insecure: a.insecure,
            timeout: Duration::from_secs(secs),
            tls_config: None,
        })
    }
}

/// The password from `--password-file` (first line) or `--password-env VAR`.
fn read_password(a: &ConnectArgs) -> Result<String, ClientError> {
    match (&a.password_file, &a.password_env) {
        (Some(_), Some(_)) => Err(ClientError::Usage(
            "give either --password-file or --password-env, not both".to_owned(),
        )),
        (Some(f), None) => crate::cli::read_password(None, Some(f)).map_err(ClientError::NoInput),
        (None, Some(var)) => match std::env::var(var) {
            Ok(p) if !p.is_empty() && p.len() <= crate::cli::MAX_PASSWORD_BYTES => Ok(p),
            Ok(_) => Err(ClientError::Usage(format!(
                "${var} is empty or longer than {} bytes",
                crate::cli::MAX_PASSWORD_BYTES
            ))),
            Err(_) => Err(ClientError::Usage(format!(
                "--password-env {var}: variable not set or not UTF-8"
            ))),
        },
        (None, None) => Err(ClientError::Usage(
            "--jid needs --password-file FILE or --password-env VAR".to_owned(),
        )),
    }
}

/// Splits `HOST[:PORT]` (`[v6]:PORT` or a bare IPv6 address too).
///
/// # Errors
///
/// A usage error for an empty host or a bad port.
pub fn parse_server(s: &str, default_port: u16) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Usage(format!("--server {s}: expected HOST[:PORT]"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
        match tail.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if tail.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else if s.matches(':').count() > 1 {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}
