//! The client command flows (`pub`, `sub`, `nodes`, `items`, `node ...`) and their exit
//! statuses: each `*_main` prints `kinglet: <error>` on stderr and returns the status of
//! [`ClientError::exit_code`].

use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::{Command, ItemsArgs, NodeAction, NodeArgs, NodesArgs, PubArgs, SubArgs};
use crate::xml::Element;

use super::catchup::{CatchUp, Recent, Step};
use super::conn::{Conn, Detached, SmStatus, Start};
use super::pubsub::{
    self, Format, Item, MAX_PAYLOAD_BYTES, config_fields, config_form, create_body,
    disco_info_body, disco_items_body, format_item, items_body, items_from_event,
    items_from_result, nodes_from_disco, owner_body, parse_config, publish_body, subscription_body,
};
use super::settings::Settings;
use super::{ClientError, StanzaError};

/// First reconnect delay of `sub`.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay of `sub`.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Idle time after which `sub` pings the server (XEP-0199) to check the connection,
/// unless `--keepalive` says otherwise.
pub const KEEPALIVE: Duration = Duration::from_secs(60);
/// Longest `--keepalive`, in seconds.
pub const MAX_KEEPALIVE_SECS: u64 = 3600;
/// Largest `--last` / `--max`.
pub const MAX_ITEMS_REQUEST: u32 = 10_000;

/// Set by SIGINT/SIGTERM during `sub`.
static STOP: AtomicBool = AtomicBool::new(false);

/// Runs a client command; `None` if `cmd` is not one.
pub fn run(cmd: &Command) -> Option<i32> {
    let result = match cmd {
        Command::Pub(a) => publish(a),
        Command::Sub(a) => subscribe(a),
        Command::Nodes(a) => nodes(a),
        Command::Items(a) => items(a),
        Command::Node(a) => node(a),
        _ => return None,
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kinglet: {e}");
            e.exit_code()
        }
    })
}

/// Adds a hint to an `item-not-found` reply about a node.
fn node_missing(e: ClientError, node: &str, hint: &str) -> ClientError {
    match e {
        ClientError::Xmpp(mut s) if s.condition == "item-not-found" => {
            s.context = format!("node '{node}' does not exist{hint}");
            ClientError::Xmpp(s)
        }
        other => other,
    }
}

/// Reads a `--lines` line of at most [`MAX_PAYLOAD_BYTES`]; `None` at end of input.
fn read_line(input: &mut impl BufRead, lineno: usize) -> Result<Option<String>, ClientError> {
    let mut buf = Vec::new();
    let n = input
        .take(MAX_PAYLOAD_BYTES as u64 + 2)
        .read_until(b'\n', &mut buf)
        .map_err(|e| ClientError::NoInput(format!("stdin: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_PAYLOAD_BYTES + 1 {
        return Err(ClientError::Data(format!(
            "stdin line {lineno}: longer than {MAX_PAYLOAD_BYTES} bytes"
        )));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ClientError::Data(format!("stdin line {lineno}: not UTF-8")))
}

/// The payload element from text, as `--json` says.
fn make_payload(text: &str, json: bool) -> Result<crate::xml::Element, ClientError> {
    if json {
        pubsub::payload_from_json(text)
    } else {
        pubsub::payload_from_xml(text)
    }
}

/// `kinglet pub`.
fn publish(a: &PubArgs) -> Result<(), ClientError> {
    let mut settings = Settings::resolve(&a.connect_args())?;
    let config = parse_config(&a.node_options())?;
    if !config.is_empty() && !a.create {
        return Err(ClientError::Usage("--set needs --create".to_owned()));
    }
    if a.lines && a.id.is_some() {
        return Err(ClientError::Usage(
            "--id with --lines would overwrite one item with every line".to_owned(),
        ));
    }
    let single = if a.lines {
        if a.payload.as_deref().is_some_and(|p| p != "-") {
            return Err(ClientError::Usage(
                "--lines reads stdin: give no PAYLOAD, or '-'".to_owned(),
            ));
        }
        None
    } else {
        let text = match a.payload.as_deref() {
            None => {
                return Err(ClientError::Usage(
                    "no PAYLOAD: give it as an argument, or '-' for stdin".to_owned(),
                ));
            }
            Some("-") => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .lock()
                    .take(MAX_PAYLOAD_BYTES as u64 + 1)
                    .read_to_end(&mut buf)
                    .map_err(|e| ClientError::NoInput(format!("stdin: {e}")))?;
                String::from_utf8(buf)
                    .map_err(|_| ClientError::Data("stdin is not UTF-8".to_owned()))?
            }
            Some(p) => p.to_owned(),
        };
        Some(make_payload(text.trim(), a.json)?)
    };

    let mut conn = Conn::connect(&mut settings)?;
    prepare_node(&mut conn, &settings, &a.node, a.create, &config)?;
    match single {
        Some(payload) => {
            let body = publish_body(&a.node, a.id.as_deref(), &payload);
            conn.iq(
                "set",
                Some(&settings.service),
                &body,
                &format!("publish to node '{}'", a.node),
            )?;
        }
        None => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut lineno = 0;
            while let Some(line) = read_line(&mut input, lineno + 1)? {
                lineno += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let payload = make_payload(line.trim(), a.json).map_err(|e| match e {
                    ClientError::Data(m) => ClientError::Data(format!("stdin line {lineno}: {m}")),
                    other => other,
                })?;
                let body = publish_body(&a.node, None, &payload);
                let what = format!("publish line {lineno} to node '{}'", a.node);
                match conn.iq("set", Some(&settings.service), &body, &what) {
                    Ok(_) => {}
                    // A long quiet pipe may outlive the stream (idle timeout): reconnect once.
                    Err(e) if e.is_transient() => {
                        eprintln!("kinglet: {e}; reconnecting");
                        std::thread::sleep(BACKOFF_MIN);
                        conn = Conn::connect(&mut settings)?;
                        conn.iq("set", Some(&settings.service), &body, &what)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    conn.close();
    Ok(())
}

/// Creates the node (`--create`; an existing node is kept as it is) or checks that it
/// exists, so that a server's auto-create never creates a node the user did not ask for.
fn prepare_node(
    conn: &mut Conn,
    settings: &Settings,
    node: &str,
    create: bool,
    config: &[(String, String)],
) -> Result<(), ClientError> {
    if create {
        let what = format!("create node '{node}'");
        match conn.iq(
            "set",
            Some(&settings.service),
            &create_body(node, config),
            &what,
        ) {
            Ok(_) => Ok(()),
            Err(ClientError::Xmpp(e)) if e.condition == "conflict" => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        conn.iq(
            "get",
            Some(&settings.service),
            &disco_info_body(Some(node)),
            &format!("look up node '{node}'"),
        )
        .map(|_| ())
        .map_err(|e| node_missing(e, node, " (give --create to create it)"))
    }
}

/// Writes one output line; `Ok(false)` when stdout is a closed pipe (stop quietly, see
/// [`crate::cli::write_out`]).
fn emit(out: &mut impl Write, line: &str) -> Result<bool, ClientError> {
    crate::cli::write_out(out, format_args!("{line}\n")).map_err(ClientError::Output)
}

/// Registers SIGINT and SIGTERM so that `sub` can unsubscribe before exiting; a second
/// signal exits at once with status 130.
fn install_stop_handler() -> Result<(), ClientError> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let mut signals = Signals::new([Signal::Int, Signal::Term])
        .map_err(|e| ClientError::Protocol(format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("kinglet-signals".to_owned())
        .spawn(move || {
            smol::block_on(async {
                while signals.next().await.is_some() {
                    if STOP.swap(true, Ordering::SeqCst) {
                        std::process::exit(crate::exit::EX_INTERRUPTED);
                    }
                }
            });
        })
        .map_err(|e| ClientError::Protocol(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// Sleeps `d`, waking early on a stop request; returns whether a stop was requested.
fn sleep_unless_stopped(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if STOP.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
    STOP.load(Ordering::SeqCst)
}

/// What a (re)connected `sub` still has to do on its session.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    /// Subscribe (a new session).
    subscribe: bool,
    /// Fetch the items published while disconnected (a new session after a lost one).
    catch_up: bool,
}

/// One `kinglet sub`: its options, its output, what it printed, and the session it may
/// resume after a cut.
struct SubRun<'a, W: Write> {
    node: &'a str,
    settings: Settings,
    format: Format,
    out: W,
    /// `--count`.
    count: Option<u64>,
    printed: u64,
    /// Stdout was closed: stop quietly.
    closed: bool,
    verbose: bool,
    /// What was printed lately: the catch-up's anchor, and what an event may repeat.
    recent: Recent,
    /// Catch up after a reconnect that did not resume (off with `--no-catch-up`, or when
    /// the node's items cannot be read).
    catch_up: bool,
    /// Use XEP-0198 (off with `--no-resume`).
    manage: bool,
    pending: Pending,
    /// Stanzas a lost stream left while a catch-up was pending: handled after it.
    carried: VecDeque<Element>,
    /// The lost XEP-0198 session to resume.
    session: Option<Detached>,
}

impl<W: Write> SubRun<'_, W> {
    /// Whether `sub` is finished (`--count` reached, or stdout closed).
    fn done(&self) -> bool {
        self.closed || self.count.is_some_and(|c| self.printed >= c)
    }

    /// Prints one item (unless finished).
    fn print(&mut self, item: &Item, stanza: Option<&Element>) -> Result<(), ClientError> {
        if self.done() {
            return Ok(());
        }
        if emit(&mut self.out, &format_item(item, self.format, stanza))? {
            self.printed += 1;
        } else {
            self.closed = true;
        }
        Ok(())
    }

    /// Prints items from an items reply (`--last`, catch-up), oldest first.
    fn print_fetched(&mut self, items: &[Item]) -> Result<(), ClientError> {
        for item in items {
            if self.done() {
                break;
            }
            self.print(item, None)?;
            self.recent.printed_fetched(item, Instant::now());
        }
        Ok(())
    }

    /// Handles a stanza from the server: prints the items of an event for the node (not
    /// those an items reply printed already); the node's deletion ends `sub`.
    fn handle(&mut self, stanza: &Element) -> Result<(), ClientError> {
        if pubsub::is_delete_event(stanza, &self.settings.service, self.node) {
            return Err(ClientError::Xmpp(StanzaError {
                condition: "item-not-found".to_owned(),
                app_condition: None,
                text: None,
                context: format!("node '{}' was deleted", self.node),
            }));
        }
        for item in items_from_event(stanza, &self.settings.service, self.node) {
            if self.done() {
                break;
            }
            if self.recent.is_duplicate(&item, Instant::now()) {
                continue;
            }
            self.print(&item, Some(stanza))?;
            self.recent.printed_live(&item);
        }
        Ok(())
    }

    /// Takes what a lost connection leaves: its session to resume, and the stanzas it
    /// received but did not hand out yet, handled now (or after the pending catch-up,
    /// since they are newer than what it will print).
    fn lose(&mut self, conn: Conn) -> Result<(), ClientError> {
        let lost = conn.into_lost();
        if lost.session.is_some() {
            self.session = lost.session;
        }
        if self.pending.catch_up {
            self.carried = lost.queued;
            return Ok(());
        }
        for stanza in lost.queued {
            self.handle(&stanza)?;
        }
        Ok(())
    }

    /// Opens a stream, resuming the lost session when the server allows it, else binding,
    /// subscribing and (after a lost session, unless `--no-catch-up`) catching up.
    fn establish(&mut self, first: bool) -> Result<Conn, ClientError> {
        let (mut conn, start) =
            Conn::connect_managed(&mut self.settings, self.manage, &mut self.session)?;
        match &start {
            Start::Resumed => eprintln!(
                "kinglet: reconnected and resumed the session of '{}' as {}",
                self.node,
                conn.jid()
            ),
            Start::New { resume_failed, sm } => {
                self.pending.subscribe = true;
                self.pending.catch_up |= !first && self.catch_up;
                if let Some(why) = resume_failed {
                    eprintln!("kinglet: could not resume the session: {why}");
                }
                if first && self.verbose {
                    self.say_sm(sm);
                }
            }
        }
        conn.requeue_front(std::mem::take(&mut self.carried));
        match self.finish_establish(&mut conn, first) {
            Ok(()) => Ok(conn),
            Err(e) if e.is_transient() => {
                self.lose(conn)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Says on stderr (`--verbose`) what became of stream management.
    fn say_sm(&self, sm: &SmStatus) {
        let fallback = if self.catch_up {
            "a reconnect will catch up instead"
        } else {
            "items published during a reconnect will be missed (--no-catch-up)"
        };
        match sm {
            SmStatus::Off => {}
            SmStatus::NotOffered => eprintln!(
                "kinglet: the server does not offer stream management (XEP-0198); {fallback}"
            ),
            SmStatus::Enabled { resumable: true } => {
                eprintln!("kinglet: stream management enabled, resumable (XEP-0198)");
            }
            SmStatus::Enabled { resumable: false } => eprintln!(
                "kinglet: stream management enabled, not resumable (XEP-0198); {fallback}"
            ),
            SmStatus::Failed(c) => eprintln!(
                "kinglet: the server refused stream management (XEP-0198): {c}; {fallback}"
            ),
        }
    }

    /// The pending subscription and catch-up of a new (or resumed) stream.
    fn finish_establish(&mut self, conn: &mut Conn, first: bool) -> Result<(), ClientError> {
        if self.pending.subscribe {
            let jid = conn.jid().to_owned();
            conn.iq(
                "set",
                Some(&self.settings.service),
                &subscription_body("subscribe", self.node, &jid),
                &format!("subscribe to node '{}'", self.node),
            )
            .map_err(|e| node_missing(e, self.node, ""))?;
            self.pending.subscribe = false;
            if !first {
                eprintln!(
                    "kinglet: reconnected and subscribed to '{}' as {jid}",
                    self.node
                );
            }
        }
        if self.pending.catch_up {
            self.catch_up(conn)?;
            self.pending.catch_up = false;
        }
        Ok(())
    }

    /// Fetches and prints the items published since the last one printed
    /// ([`super::catchup`]).
    fn catch_up(&mut self, conn: &mut Conn) -> Result<(), ClientError> {
        if !self.recent.is_known() {
            return Ok(());
        }
        let node = self.node;
        let what = format!("get the items of node '{node}' published while disconnected");
        let mut c = CatchUp::new(node);
        let mut step = c.start();
        loop {
            match step {
                Step::Request(body) => {
                    match conn.iq("get", Some(&self.settings.service), &body, &what) {
                        Ok(reply) => step = c.on_reply(&reply, &self.recent),
                        Err(ClientError::Xmpp(e)) => match c.on_error(&e.condition) {
                            Some(s) => step = s,
                            None if e.condition == "item-not-found" => {
                                return Err(node_missing(ClientError::Xmpp(e), node, ""));
                            }
                            None => {
                                eprintln!(
                                    "kinglet: warning: cannot catch up: {e}; items published \
                                     while disconnected are not printed"
                                );
                                return Ok(());
                            }
                        },
                        Err(e) => return Err(e),
                    }
                }
                Step::Done(outcome) => {
                    if let Some(w) = &outcome.warning {
                        eprintln!("kinglet: warning: {w}");
                    }
                    if !outcome.items.is_empty() || self.verbose {
                        eprintln!(
                            "kinglet: caught up {} items published at '{node}' while \
                             disconnected",
                            outcome.items.len()
                        );
                    }
                    return self.print_fetched(&outcome.items);
                }
            }
        }
    }

    /// After the first subscription: prints `--last` items, or notes the node's newest
    /// item as the starting point of a catch-up.
    fn start(&mut self, conn: &mut Conn, last: Option<u32>) -> Result<(), ClientError> {
        let node = self.node;
        if let Some(n) = last.filter(|n| *n > 0) {
            let reply = conn.iq(
                "get",
                Some(&self.settings.service),
                &items_body(node, Some(n)),
                &format!("get the last items of node '{node}'"),
            )?;
            let items = items_from_result(&reply, node);
            self.recent.note_start(None);
            return self.print_fetched(&items);
        }
        if !self.catch_up {
            return Ok(());
        }
        match conn.iq(
            "get",
            Some(&self.settings.service),
            &items_body(node, Some(1)),
            &format!("get the newest item of node '{node}'"),
        ) {
            Ok(reply) => {
                let items = items_from_result(&reply, node);
                self.recent.note_start(items.last());
            }
            Err(ClientError::Xmpp(e)) => {
                eprintln!(
                    "kinglet: warning: cannot read the items of node '{node}' ({e}); no \
                     catch-up after a reconnect"
                );
                self.catch_up = false;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Reconnects with exponential back-off ([`BACKOFF_MIN`]..[`BACKOFF_MAX`]) after `conn`
    /// was lost; `Ok(None)` if a stop was requested meanwhile (or `sub` is finished).
    /// Non-transient failures (authentication, the node is gone) end the command.
    fn reconnect(&mut self, conn: Conn, why: &ClientError) -> Result<Option<Conn>, ClientError> {
        eprintln!("kinglet: connection lost: {why}");
        self.lose(conn)?;
        let mut delay = BACKOFF_MIN;
        while !self.done() {
            eprintln!("kinglet: reconnecting in {}s", delay.as_secs());
            if sleep_unless_stopped(delay) {
                return Ok(None);
            }
            match self.establish(false) {
                Ok(c) => return Ok(Some(c)),
                Err(e) if e.is_transient() => {
                    eprintln!("kinglet: reconnect failed: {e}");
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// `kinglet sub`.
fn subscribe(a: &SubArgs) -> Result<(), ClientError> {
    let format = Format::parse(a.format.as_deref())?;
    let settings = Settings::resolve(&a.connect_args())?;
    if a.last.is_some_and(|n| n > MAX_ITEMS_REQUEST) {
        return Err(ClientError::Usage(format!(
            "--last is at most {MAX_ITEMS_REQUEST}"
        )));
    }
    keepalive(a)?;
    if a.count == Some(0) {
        return Ok(());
    }
    install_stop_handler()?;
    run_sub(a, settings, format, std::io::stdout().lock())
}

/// The idle time after which `sub` pings the server: `--keepalive`, else [`KEEPALIVE`].
///
/// # Errors
///
/// A usage error outside 1 to [`MAX_KEEPALIVE_SECS`] seconds.
fn keepalive(a: &SubArgs) -> Result<Duration, ClientError> {
    match a.keepalive {
        None => Ok(KEEPALIVE),
        Some(s) if (1..=MAX_KEEPALIVE_SECS).contains(&s) => Ok(Duration::from_secs(s)),
        Some(_) => Err(ClientError::Usage(format!(
            "--keepalive must be 1 to {MAX_KEEPALIVE_SECS} seconds"
        ))),
    }
}

/// `kinglet sub` with resolved settings, printing to `out`.
fn run_sub<W: Write>(
    a: &SubArgs,
    settings: Settings,
    format: Format,
    out: W,
) -> Result<(), ClientError> {
    let keepalive = keepalive(a)?;
    let mut run = SubRun {
        node: a.node.as_str(),
        settings,
        format,
        out,
        count: a.count,
        printed: 0,
        closed: false,
        verbose: a.verbose,
        recent: Recent::new(),
        catch_up: !a.no_catch_up,
        manage: !a.no_resume,
        pending: Pending::default(),
        carried: VecDeque::new(),
        session: None,
    };
    let node = run.node;
    let mut conn = run.establish(true)?;
    if a.verbose {
        eprintln!("kinglet: subscribed to node '{node}' as {}", conn.jid());
    }
    run.start(&mut conn, a.last)?;

    let mut last_traffic = Instant::now();
    while !STOP.load(Ordering::SeqCst) && !run.done() {
        let lost = match conn.next_stanza(Instant::now() + Duration::from_millis(500)) {
            Ok(Some(stanza)) => {
                last_traffic = Instant::now();
                run.handle(&stanza)?;
                continue;
            }
            Ok(None) if last_traffic.elapsed() >= keepalive => {
                last_traffic = Instant::now();
                // An XEP-0199 ping proves the server is alive (a whitespace keepalive
                // would sit in a socket buffer towards a dead peer). Any reply, even
                // an error from a server without ping, is a sign of life.
                let domain = run.settings.domain.clone();
                match conn.iq("get", Some(&domain), &ping_body(), "ping the server") {
                    Ok(_) | Err(ClientError::Xmpp(_)) => continue,
                    Err(e) if e.is_transient() => e,
                    Err(e) => return Err(e),
                }
            }
            Ok(None) => continue,
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        match run.reconnect(conn, &lost)? {
            Some(c) => conn = c,
            None => return Ok(()),
        }
        last_traffic = Instant::now();
    }
    let jid = conn.jid().to_owned();
    let unsub = conn.iq(
        "set",
        Some(&run.settings.service),
        &subscription_body("unsubscribe", node, &jid),
        &format!("unsubscribe from node '{node}'"),
    );
    if let Err(e) = unsub {
        eprintln!("kinglet: {e}");
    }
    conn.close();
    Ok(())
}

/// Prints items in `format`.
fn print_items(items: &[Item], format: Format) -> Result<(), ClientError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for item in items {
        if !emit(&mut out, &format_item(item, format, None))? {
            break;
        }
    }
    Ok(())
}

/// `kinglet nodes`.
fn nodes(a: &NodesArgs) -> Result<(), ClientError> {
    let mut settings = Settings::resolve(&a.connect_args())?;
    let mut conn = Conn::connect(&mut settings)?;
    let reply = conn.iq(
        "get",
        Some(&settings.service),
        &disco_items_body(),
        &format!("list the nodes of {}", settings.service),
    )?;
    conn.close();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (node, _name) in nodes_from_disco(&reply) {
        if !emit(&mut out, &node)? {
            break;
        }
    }
    Ok(())
}

/// `kinglet items`.
fn items(a: &ItemsArgs) -> Result<(), ClientError> {
    let format = Format::parse(a.format.as_deref())?;
    if a.max.is_some_and(|n| n == 0 || n > MAX_ITEMS_REQUEST) {
        return Err(ClientError::Usage(format!(
            "--max is 1 to {MAX_ITEMS_REQUEST}"
        )));
    }
    let mut settings = Settings::resolve(&a.connect_args())?;
    let mut conn = Conn::connect(&mut settings)?;
    let reply = conn
        .iq(
            "get",
            Some(&settings.service),
            &items_body(&a.node, a.max),
            &format!("get the items of node '{}'", a.node),
        )
        .map_err(|e| node_missing(e, &a.node, ""))?;
    conn.close();
    print_items(&items_from_result(&reply, &a.node), format)
}

/// `kinglet node create|delete|config`.
fn node(a: &NodeArgs) -> Result<(), ClientError> {
    let (connect, node) = match &a.action {
        NodeAction::Create(c) => (c.connect_args(), &c.node),
        NodeAction::Delete(d) => (d.connect_args(), &d.node),
        NodeAction::Config(c) => (c.connect_args(), &c.node),
    };
    let mut settings = Settings::resolve(&connect)?;
    // Validate the options before connecting.
    let pairs = match &a.action {
        NodeAction::Create(c) => parse_config(&c.node_options())?,
        NodeAction::Config(c) => parse_config(&c.settings)?,
        NodeAction::Delete(_) => Vec::new(),
    };
    let mut conn = Conn::connect(&mut settings)?;
    let service = settings.service.clone();
    let result = match &a.action {
        NodeAction::Create(_) => conn
            .iq(
                "set",
                Some(&service),
                &create_body(node, &pairs),
                &format!("create node '{node}'"),
            )
            .map(|_| ()),
        NodeAction::Delete(_) => conn
            .iq(
                "set",
                Some(&service),
                &owner_body("delete", node, None),
                &format!("delete node '{node}'"),
            )
            .map(|_| ())
            .map_err(|e| node_missing(e, node, "")),
        NodeAction::Config(_) if pairs.is_empty() => {
            let reply = conn
                .iq(
                    "get",
                    Some(&service),
                    &owner_body("configure", node, None),
                    &format!("get the configuration of node '{node}'"),
                )
                .map_err(|e| node_missing(e, node, ""));
            match reply {
                Ok(r) => {
                    let stdout = std::io::stdout();
                    let mut out = stdout.lock();
                    for (k, v) in config_fields(&r) {
                        let k = k.strip_prefix("pubsub#").unwrap_or(&k);
                        if !emit(&mut out, &format!("{k}={v}"))? {
                            break;
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        NodeAction::Config(_) => conn
            .iq(
                "set",
                Some(&service),
                &owner_body("configure", node, Some(&config_form(&pairs))),
                &format!("configure node '{node}'"),
            )
            .map(|_| ())
            .map_err(|e| node_missing(e, node, "")),
    };
    conn.close();
    result
}

/// The XEP-0199 ping request body.
fn ping_body() -> String {
    crate::xml::build(|w| {
        w.start("ping").ns(crate::proto::NS_PING).end();
    })
}

#[cfg(test)]
mod tests;
