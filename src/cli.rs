//! Command-line interface: argument types (argh), password input, stdout output and
//! `check-config`.
//!
//! This module owns the shape of the command line (`kinglet [run|check-config|user ...]`),
//! reading a password for `user add|passwd` without echoing it through argv when possible,
//! writing command output to stdout ([`write_out`], [`print_stdout`]: a reader that went
//! away ends a command quietly), and the whole `check-config` command. It does not run the
//! daemon or touch the account store: `main.rs` dispatches on [`Command`] to the daemon and
//! store code.

use std::fs::File;
use std::io::{BufRead, ErrorKind, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::config::{Config, ConfigError, Tls};

/// Exit status for an unusable configuration (`EX_CONFIG`), and when writing the output
/// failed, other than a closed pipe (`EX_IOERR`).
pub use crate::exit::{EX_CONFIG, EX_IOERR};
/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Largest certificate or key file `check-config` reads, in bytes.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Kinglet, a tiny XMPP publish-subscribe broker. Without a subcommand it runs the daemon.
#[derive(FromArgs, Debug, PartialEq)]
pub struct Args {
    /// what to do (default: run)
    #[argh(subcommand)]
    pub command: Option<Command>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// The subcommands.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum Command {
    /// `kinglet run`.
    Run(RunArgs),
    /// `kinglet check-config`.
    CheckConfig(CheckConfigArgs),
    /// `kinglet user ...`.
    User(UserArgs),
    /// `kinglet pub` (client).
    Pub(PubArgs),
    /// `kinglet sub` (client).
    Sub(SubArgs),
    /// `kinglet nodes` (client).
    Nodes(NodesArgs),
    /// `kinglet items` (client).
    Items(ItemsArgs),
    /// `kinglet node create|delete|config` (client).
    Node(NodeArgs),
}

/// Run the broker in the foreground.
#[derive(FromArgs, Debug, PartialEq, Default)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// configuration file (default: built-in defaults, loopback only)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Validate the configuration, print the effective configuration, exit 78 on error.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "check-config")]
pub struct CheckConfigArgs {
    /// configuration file (default: built-in defaults)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Manage accounts.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "user")]
pub struct UserArgs {
    /// the account operation
    #[argh(subcommand)]
    pub action: UserAction,
}

/// The account operations.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum UserAction {
    /// `kinglet user add`.
    Add(UserAddArgs),
    /// `kinglet user del`.
    Del(UserDelArgs),
    /// `kinglet user list`.
    List(UserListArgs),
    /// `kinglet user passwd`.
    Passwd(UserPasswdArgs),
}

/// Defines the arguments of a `user` command that sets a password (`add`, `passwd`): the
/// same flags, written once.
macro_rules! user_password_args {
    ($(#[$meta:meta])* $name:ident) => {
        #[derive(FromArgs, Debug, PartialEq)]
        $(#[$meta])*
        pub struct $name {
            /// account JID (user@domain) or local part
            #[argh(positional)]
            pub jid: String,
            /// the password (visible in `ps`; prefer --password-file or stdin)
            #[argh(option)]
            pub password: Option<String>,
            /// file whose first line is the password
            #[argh(option)]
            pub password_file: Option<PathBuf>,
            /// configuration file (default: built-in defaults)
            #[argh(option, short = 'c')]
            pub config: Option<PathBuf>,
        }
    };
}

user_password_args! {
    /// Create an account. The password comes from --password-file, from stdin when it is not a
    /// terminal, or from --password (visible to other users in `ps`).
    #[argh(subcommand, name = "add")]
    UserAddArgs
}

/// Delete an account and its subscriptions.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "del")]
pub struct UserDelArgs {
    /// account JID (user@domain) or local part
    #[argh(positional)]
    pub jid: String,
    /// configuration file (default: built-in defaults)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// List accounts, one JID per line.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "list")]
pub struct UserListArgs {
    /// configuration file (default: built-in defaults)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

user_password_args! {
    /// Change an account's password. The password is read as for `user add`.
    #[argh(subcommand, name = "passwd")]
    UserPasswdArgs
}

/// The connection flags of every client command, in help order, written once: the doc is
/// the help text, `option`/`switch` the `#[argh(...)]` kind. Calls `$then! { args… table }`.
macro_rules! connect_flags {
    ($then:ident! { $($args:tt)* }) => {
        $then! {
            $($args)*
            /// server HOST[:PORT] (default: the JID's domain, else localhost; port 5222, 5223 with --tls direct)
            option server: Option<String>,
            /// XMPP domain (default: the JID's domain, else the server host name, else localhost)
            option domain: Option<String>,
            /// log in as this account (user@domain[/resource]); default: anonymous login
            option jid: Option<String>,
            /// file whose first line is the password of --jid
            option password_file: Option<PathBuf>,
            /// environment variable holding the password of --jid
            option password_env: Option<String>,
            /// resource to bind (default: kinglet-<pid>)
            option resource: Option<String>,
            /// pubsub service JID (default: pubsub.<domain>)
            option service: Option<String>,
            /// TLS: auto (STARTTLS if offered; plaintext to loopback only), starttls, direct or off
            option tls: Option<String>,
            /// trust the CA certificates in this PEM file (default: the system bundle)
            option ca_file: Option<PathBuf>,
            /// do not verify the server certificate (DANGEROUS; prints a warning)
            switch insecure: bool,
            /// seconds to wait for connecting and for each reply (default 10)
            option timeout: Option<u64>,
        }
    };
}

/// Defines [`ConnectArgs`] from the [`connect_flags!`] table.
macro_rules! connect_args_struct {
    ($($(#[$m:meta])* $kind:ident $field:ident : $outer:ident $(< $inner:ident >)?,)*) => {
        /// The connection flags shared by the client commands (`pub`, `sub`, `nodes`, `items`,
        /// `node ...`); `crate::client` resolves them into its connection settings.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct ConnectArgs {
            $($(#[$m])* pub $field: $outer $(< $inner >)?,)*
        }
    };
}

connect_flags!(connect_args_struct! {});

/// Defines a client command's argument struct: its own fields plus the connection flags of
/// [`ConnectArgs`] (argh has no flattening), and `connect_args()` to extract those.
macro_rules! client_args {
    ($(#[$meta:meta])* $name:ident { $($own:tt)* }) => {
        connect_flags!(client_args! { @struct $(#[$meta])* $name { $($own)* } });
    };
    // Field types are matched as tokens (`Option<String>`), not as `ty` fragments: argh's
    // derive must see `Option`/`Vec`/`bool` to pick optional, repeated and switch handling.
    (@struct $(#[$meta:meta])* $name:ident {
        $($(#[$fmeta:meta])* $field:ident : $outer:ident $(< $inner:ident >)?,)*
    } $($(#[$cmeta:meta])* $kind:ident $cfield:ident : $couter:ident $(< $cinner:ident >)?,)*) => {
        #[derive(FromArgs, Debug, PartialEq)]
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $outer $(< $inner >)?,)*
            $($(#[$cmeta])* #[argh($kind)] pub $cfield: $couter $(< $cinner >)?,)*
        }

        impl $name {
            /// The shared connection flags.
            pub fn connect_args(&self) -> ConnectArgs {
                ConnectArgs {
                    $($cfield: self.$cfield.clone(),)*
                }
            }
        }
    };
}

client_args! {
    /// Publish an item to a pubsub node (XML payload, --json, or stdin).
    #[argh(subcommand, name = "pub")]
    PubArgs {
        /// the node to publish to
        #[argh(option)]
        node: String,
        /// item id (default: the server generates one; the same id replaces the item)
        #[argh(option)]
        id: Option<String>,
        /// the payload is JSON: wrap it in an XEP-0335 <json xmlns='urn:xmpp:json:0'/>
        #[argh(switch)]
        json: bool,
        /// read stdin and publish one item per non-empty line
        #[argh(switch)]
        lines: bool,
        /// create the node first if it does not exist
        #[argh(switch)]
        create: bool,
        /// node configuration for --create, KEY=VALUE (e.g. max_items=100); repeatable
        #[argh(option, arg_name = "KEY=VALUE")]
        set: Vec<String>,
        /// the old spelling of --set, kept as an alias
        #[argh(option, arg_name = "KEY=VALUE")]
        config: Vec<String>,
        /// the payload: one namespaced XML element, JSON with --json, or - for stdin
        #[argh(positional)]
        payload: Option<String>,
    }
}

client_args! {
    /// Subscribe to a node and print items as they arrive, one per line.
    #[argh(subcommand, name = "sub")]
    SubArgs {
        /// the node to subscribe to
        #[argh(option)]
        node: String,
        /// first print the last N items of the node
        #[argh(option)]
        last: Option<u32>,
        /// output: xml (the payload), json (one object per item) or raw (the whole stanza)
        #[argh(option)]
        format: Option<String>,
        /// exit after printing N items
        #[argh(option)]
        count: Option<u64>,
        /// say on stderr when the subscription is in place
        #[argh(switch, short = 'v')]
        verbose: bool,
        /// after a reconnect that could not resume the session, do not fetch and print the
        /// items published while disconnected (they are then lost to this sub)
        #[argh(switch)]
        no_catch_up: bool,
        /// do not use XEP-0198 stream management (acks, session resumption); a reconnect
        /// then always subscribes again and catches up (unless --no-catch-up)
        #[argh(switch)]
        no_resume: bool,
        /// ping the server after this many seconds without traffic, to notice a dead
        /// connection (1 to 3600; default 60)
        #[argh(option)]
        keepalive: Option<u64>,
    }
}

client_args! {
    /// List the nodes of the pubsub service.
    #[argh(subcommand, name = "nodes")]
    NodesArgs {}
}

client_args! {
    /// Print the items stored at a node.
    #[argh(subcommand, name = "items")]
    ItemsArgs {
        /// the node
        #[argh(positional)]
        node: String,
        /// at most this many items (the newest)
        #[argh(option)]
        max: Option<u32>,
        /// output: xml (the payload), json (one object per item) or raw (the item element)
        #[argh(option)]
        format: Option<String>,
    }
}

/// Create, delete or configure a node.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "node")]
pub struct NodeArgs {
    /// the node operation
    #[argh(subcommand)]
    pub action: NodeAction,
}

/// The node operations.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum NodeAction {
    /// `kinglet node create`.
    Create(NodeCreateArgs),
    /// `kinglet node delete`.
    Delete(NodeDeleteArgs),
    /// `kinglet node config`.
    Config(NodeConfigArgs),
}

client_args! {
    /// Create a node, optionally configured.
    #[argh(subcommand, name = "create")]
    NodeCreateArgs {
        /// the node
        #[argh(positional)]
        node: String,
        /// node configuration, KEY=VALUE (e.g. max_items=100); repeatable
        #[argh(option, arg_name = "KEY=VALUE")]
        set: Vec<String>,
        /// the old spelling of --set, kept as an alias
        #[argh(option, arg_name = "KEY=VALUE")]
        config: Vec<String>,
    }
}

impl PubArgs {
    /// The node configuration options for `--create`: `--config` (the old spelling, kept
    /// as an alias for scripts) and `--set` together.
    pub fn node_options(&self) -> Vec<String> {
        node_options(&self.set, &self.config)
    }
}

impl NodeCreateArgs {
    /// The node configuration options: `--config` (the old spelling, kept as an alias for
    /// scripts) and `--set` together.
    pub fn node_options(&self) -> Vec<String> {
        node_options(&self.set, &self.config)
    }
}

/// `KEY=VALUE` node options given with `--set` and with its alias `--config`: the alias's
/// first (argh keeps no order between two options).
fn node_options(set: &[String], config: &[String]) -> Vec<String> {
    config.iter().chain(set).cloned().collect()
}

client_args! {
    /// Delete a node and its items.
    #[argh(subcommand, name = "delete")]
    NodeDeleteArgs {
        /// the node
        #[argh(positional)]
        node: String,
    }
}

client_args! {
    /// Show a node's configuration (key=value lines), or change it with key=value arguments.
    #[argh(subcommand, name = "config")]
    NodeConfigArgs {
        /// the node
        #[argh(positional)]
        node: String,
        /// key=value settings to submit (none: print the configuration)
        #[argh(positional)]
        settings: Vec<String>,
    }
}

impl Args {
    /// The `--config` path of whichever subcommand was given (`None` for plain `kinglet`).
    pub fn config_path(&self) -> Option<&Path> {
        let path = match self.command.as_ref()? {
            Command::Run(a) => &a.config,
            Command::CheckConfig(a) => &a.config,
            Command::User(u) => match &u.action {
                UserAction::Add(a) => &a.config,
                UserAction::Del(a) => &a.config,
                UserAction::List(a) => &a.config,
                UserAction::Passwd(a) => &a.config,
            },
            Command::Pub(_)
            | Command::Sub(_)
            | Command::Nodes(_)
            | Command::Items(_)
            | Command::Node(_) => return None,
        };
        path.as_deref()
    }
}

/// The version line printed by `kinglet --version`.
pub fn version_line() -> String {
    format!("kinglet {}", env!("CARGO_PKG_VERSION"))
}

/// Writes `args` to `out` and flushes it. `Ok(false)` means the reader went away (EPIPE, as
/// in `kinglet ... | head -1`): the caller stops writing and exits quietly, like ripgrep and
/// coreutils. (Rust ignores SIGPIPE, so `println!` would panic there: exit 101, or 134 with
/// the release profile's `panic = "abort"`.) Other write errors are returned.
///
/// Every write of a command's output to stdout goes through this function.
///
/// # Errors
///
/// A write or flush error other than [`ErrorKind::BrokenPipe`].
pub fn write_out(out: &mut impl Write, args: std::fmt::Arguments<'_>) -> std::io::Result<bool> {
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Prints `text` on the locked stdout for a command whose exit status is `code`: returns
/// `code`, also when the reader went away (quietly, nothing on stderr); another write
/// error is reported on stderr and gives [`EX_IOERR`].
pub fn print_stdout(text: &str, code: i32) -> i32 {
    print_to(&mut std::io::stdout().lock(), text, code)
}

/// [`print_stdout`] to any writer (testable).
fn print_to(out: &mut impl Write, text: &str, code: i32) -> i32 {
    match write_out(out, format_args!("{text}")) {
        Ok(_) => code,
        Err(e) => {
            eprintln!("kinglet: cannot write output: {e}");
            EX_IOERR
        }
    }
}

/// Reads the new password for `user add|passwd`.
///
/// Exactly one source is used: `--password`, `--password-file` (its first line), or, if
/// neither is given and stdin is not a terminal, one line of stdin. One trailing newline
/// (`\n` or `\r\n`) is removed; nothing else is trimmed.
///
/// # Errors
///
/// Both options given; nothing given on an interactive terminal (no echo-free prompt without
/// unsafe code, so a terminal is refused rather than echoing the password); an unreadable
/// file; an empty password, one longer than [`MAX_PASSWORD_BYTES`], or one containing a line
/// break or NUL.
pub fn read_password(args_password: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    read_password_from(args_password, file, stdin.lock(), interactive)
}

/// [`read_password`] with stdin and its terminal-ness passed in (testable).
fn read_password_from(
    args_password: Option<&str>,
    file: Option<&Path>,
    stdin: impl BufRead,
    stdin_is_terminal: bool,
) -> Result<String, String> {
    let raw = match (args_password, file) {
        (Some(_), Some(_)) => {
            return Err("give either --password or --password-file, not both".to_owned());
        }
        (Some(p), None) => p.to_owned(),
        (None, Some(path)) => {
            let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            first_line(std::io::BufReader::new(f))
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) if stdin_is_terminal => {
            return Err(
                "no password given: use --password-file FILE, pipe the password on \
                        stdin, or --password PW (visible to other users in `ps`)"
                    .to_owned(),
            );
        }
        (None, None) => first_line(stdin).map_err(|e| format!("stdin: {e}"))?,
    };
    let password = raw
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&raw);
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if password.contains(['\n', '\r', '\0']) {
        return Err("the password contains a line break or NUL".to_owned());
    }
    Ok(password.to_owned())
}

/// Reads one line (with its newline) of at most `MAX_PASSWORD_BYTES + 2` bytes; longer input
/// is cut there and rejected by the length check.
fn first_line(reader: impl BufRead) -> Result<String, String> {
    let limit = MAX_PASSWORD_BYTES as u64 + 2;
    let mut bytes = Vec::new();
    reader
        .take(limit)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "the password is not valid UTF-8".to_owned())
}

/// Loads and validates the configuration at `path` (defaults when `None`) and, when `[tls]`
/// is set, checks that the certificate and key files are readable PEM. Returns the effective
/// configuration as TOML, followed by the worst-case memory table ([`memory_report`]) as
/// TOML comments, compared with the memory limit of the process ([`memory_reference`]).
///
/// # Errors
///
/// Any [`Config::load`] error, or a missing/unreadable/non-PEM certificate or key file
/// (key `tls.cert` or `tls.key`).
pub fn check_config(path: Option<&Path>) -> Result<String, ConfigError> {
    check_config_against(path, &memory_reference()).map(|(text, _)| text)
}

/// [`check_config`] against a given memory limit; also returns the warning to print when
/// the worst case exceeds it.
fn check_config_against(
    path: Option<&Path>,
    reference: &MemoryReference,
) -> Result<(String, Option<String>), ConfigError> {
    let config = Config::load(path)?;
    if let Some(tls) = &config.tls {
        check_tls_files(tls).map_err(|e| match path {
            Some(p) => e.in_file(p),
            None => e,
        })?;
    }
    let (table, warning) = memory_report(&config, reference);
    Ok((format!("{}\n{table}", config.to_toml()), warning))
}

/// `kinglet check-config`: prints the effective configuration and the worst-case memory
/// table to stdout and returns 0 (a worst case above the memory limit is a warning on
/// stderr after the output, not a failure; none when the reader went away), or prints `kinglet: invalid configuration: <error>` to stderr and
/// returns [`EX_CONFIG`].
pub fn check_config_main(path: Option<&Path>) -> i32 {
    check_config_main_to(path, &mut std::io::stdout().lock())
}

/// [`check_config_main`] printing to `out` (testable).
fn check_config_main_to(path: Option<&Path>, out: &mut impl Write) -> i32 {
    match check_config_against(path, &memory_reference()) {
        // The warning comes after the output, and only if it was written (a closed pipe
        // ends quietly).
        Ok((text, warning)) => match write_out(out, format_args!("{text}")) {
            Ok(written) => {
                if let (Some(w), true) = (warning, written) {
                    eprintln!("kinglet: warning: {w}");
                }
                0
            }
            Err(e) => {
                eprintln!("kinglet: cannot write output: {e}");
                EX_IOERR
            }
        },
        Err(e) => {
            eprintln!("kinglet: invalid configuration: {e}");
            EX_CONFIG
        }
    }
}

/// `MemoryMax=` of the shipped unit, `systemd/kinglet.service` (128 MiB).
pub const SHIPPED_MEMORY_MAX: u64 = 128 * 1024 * 1024;

/// The memory limit the worst case is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryReference {
    /// The limit in bytes.
    pub bytes: u64,
    /// Where it comes from, as printed: `MemoryMax=128M (systemd/kinglet.service)`.
    pub source: String,
}

/// The memory limit of this process's cgroup (cgroup v2 `memory.max`, which systemd's
/// `MemoryMax=` sets), or else the shipped unit's `MemoryMax=128M` as the reference.
pub fn memory_reference() -> MemoryReference {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_memory_max(&c, |p| std::fs::read_to_string(p).ok()))
        .unwrap_or_else(|| MemoryReference {
            bytes: SHIPPED_MEMORY_MAX,
            source: "MemoryMax=128M (systemd/kinglet.service)".to_owned(),
        })
}

/// The `memory.max` of the cgroup v2 named in `proc_self_cgroup` (the text of
/// `/proc/self/cgroup`, line `0::/path`), read through `read`; `None` without cgroup v2
/// or without a limit (`max`).
fn cgroup_memory_max(
    proc_self_cgroup: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<MemoryReference> {
    let rel = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    if rel.contains("..") {
        return None;
    }
    let file = Path::new("/sys/fs/cgroup")
        .join(rel.trim_start_matches('/'))
        .join("memory.max");
    let bytes = read(&file)?.trim().parse::<u64>().ok()?;
    Some(MemoryReference {
        bytes,
        source: format!("MemoryMax={bytes} ({})", file.display()),
    })
}

/// The worst-case memory table of `config` ([`Config::memory_budget`]) as
/// TOML comment lines: one row per bound (bytes, key, what), the total, and the total
/// compared with `reference`. Also returns a warning when the total exceeds it.
pub fn memory_report(config: &Config, reference: &MemoryReference) -> (String, Option<String>) {
    use std::fmt::Write as _;
    let rows = config.memory_budget();
    let total = crate::limits::memory_budget_total(&rows);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = String::from(
        "# Worst-case memory: every bound full at once (docs/configuration.md, \
         \"Memory sizing\").\n",
    );
    let _ = writeln!(s, "# {:>14}  {:<42} what", "bytes", "key");
    for r in &rows {
        let _ = writeln!(s, "# {:>14}  {:<42} {}", r.bytes, r.key, r.what);
    }
    let _ = writeln!(s, "# {total:>14}  {:<42} {:.1} MiB", "total", mib(total));
    let over = total > reference.bytes;
    let _ = writeln!(
        s,
        "# {} {}: the total is {} it ({:.1} MiB of {:.1} MiB)",
        if over { "WARNING:" } else { "compared with" },
        reference.source,
        if over { "above" } else { "within" },
        mib(total),
        mib(reference.bytes)
    );
    let warning = over.then(|| {
        format!(
            "the worst-case memory total ({:.1} MiB) exceeds {}; lower limits.max_connections \
             or the other bounds in the table (docs/configuration.md, \"Memory sizing\")",
            mib(total),
            reference.source
        )
    });
    (s, warning)
}

/// Checks that the certificate and key exist, are readable, and look like PEM.
fn check_tls_files(tls: &Tls) -> Result<(), ConfigError> {
    let cert = read_pem(&tls.cert).map_err(|m| ConfigError::new(Some("tls.cert"), m))?;
    if !cert.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            Some("tls.cert"),
            format!("{}: no PEM certificate found", tls.cert.display()),
        ));
    }
    let key = read_pem(&tls.key).map_err(|m| ConfigError::new(Some("tls.key"), m))?;
    let has_key = key
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with("PRIVATE KEY-----"));
    if !has_key {
        return Err(ConfigError::new(
            Some("tls.key"),
            format!("{}: no PEM private key found", tls.key.display()),
        ));
    }
    Ok(())
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{shown}: larger than {MAX_PEM_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| format!("{shown}: not a PEM text file"))
}

#[cfg(test)]
mod tests;
