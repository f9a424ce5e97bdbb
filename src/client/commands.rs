//! The client command flows (`pub`, `sub`, `nodes`, `items`, `node ...`) and their exit
//! statuses: each `*_main` prints `kinglet: <error>` on stderr and returns the status of
//! [`ClientError::exit_code`].

use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::{Command, ItemsArgs, NodeAction, NodeArgs, NodesArgs, PubArgs, SubArgs};

use super::conn::Conn;
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
/// Idle time after which `sub` pings the server (XEP-0199) to check the connection.
pub const KEEPALIVE: Duration = Duration::from_secs(60);
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

/// Connects and subscribes the bound full JID to `node`.
fn connect_and_subscribe(settings: &mut Settings, node: &str) -> Result<Conn, ClientError> {
    let mut conn = Conn::connect(settings)?;
    let jid = conn.jid().to_owned();
    conn.iq(
        "set",
        Some(&settings.service),
        &subscription_body("subscribe", node, &jid),
        &format!("subscribe to node '{node}'"),
    )
    .map_err(|e| node_missing(e, node, ""))?;
    Ok(conn)
}

/// Reconnects with exponential back-off ([`BACKOFF_MIN`]..[`BACKOFF_MAX`]); `Ok(None)` if
/// a stop was requested meanwhile. Non-transient failures (authentication, the node is
/// gone) end the command.
fn reconnect(
    settings: &mut Settings,
    node: &str,
    why: &ClientError,
) -> Result<Option<Conn>, ClientError> {
    eprintln!("kinglet: connection lost: {why}");
    let mut delay = BACKOFF_MIN;
    loop {
        eprintln!("kinglet: reconnecting in {}s", delay.as_secs());
        if sleep_unless_stopped(delay) {
            return Ok(None);
        }
        match connect_and_subscribe(settings, node) {
            Ok(c) => {
                eprintln!(
                    "kinglet: reconnected and subscribed to '{node}' as {}",
                    c.jid()
                );
                return Ok(Some(c));
            }
            Err(e) if e.is_transient() => {
                eprintln!("kinglet: reconnect failed: {e}");
                delay = (delay * 2).min(BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `kinglet sub`.
fn subscribe(a: &SubArgs) -> Result<(), ClientError> {
    let format = Format::parse(a.format.as_deref())?;
    let mut settings = Settings::resolve(&a.connect_args())?;
    if a.last.is_some_and(|n| n > MAX_ITEMS_REQUEST) {
        return Err(ClientError::Usage(format!(
            "--last is at most {MAX_ITEMS_REQUEST}"
        )));
    }
    if a.count == Some(0) {
        return Ok(());
    }
    install_stop_handler()?;
    let node = a.node.as_str();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed: u64 = 0;
    let done = |printed: u64| a.count.is_some_and(|c| printed >= c);

    let mut conn = connect_and_subscribe(&mut settings, node)?;
    if a.verbose {
        eprintln!("kinglet: subscribed to node '{node}' as {}", conn.jid());
    }
    // Events that arrived before the items reply may repeat items of that reply.
    let mut seen: Vec<String> = Vec::new();
    let mut before_items = 0;
    if let Some(n) = a.last.filter(|n| *n > 0) {
        let reply = conn.iq(
            "get",
            Some(&settings.service),
            &items_body(node, Some(n)),
            &format!("get the last items of node '{node}'"),
        )?;
        before_items = conn.queued();
        for item in items_from_result(&reply, node) {
            if done(printed) {
                break;
            }
            if !emit(&mut out, &format_item(&item, format, None))? {
                STOP.store(true, Ordering::SeqCst);
                break;
            }
            printed += 1;
            seen.push(item.id);
        }
    }

    let mut last_traffic = Instant::now();
    let mut stopped_by_pipe = false;
    while !STOP.load(Ordering::SeqCst) && !done(printed) {
        match conn.next_stanza(Instant::now() + Duration::from_millis(500)) {
            Ok(Some(stanza)) => {
                last_traffic = Instant::now();
                let early = before_items > 0;
                before_items = before_items.saturating_sub(1);
                if pubsub::is_delete_event(&stanza, &settings.service, node) {
                    return Err(ClientError::Xmpp(StanzaError {
                        condition: "item-not-found".to_owned(),
                        app_condition: None,
                        text: None,
                        context: format!("node '{node}' was deleted"),
                    }));
                }
                let items: Vec<Item> = items_from_event(&stanza, &settings.service, node);
                for item in items {
                    if done(printed) {
                        break;
                    }
                    if early && seen.contains(&item.id) {
                        continue;
                    }
                    if !emit(&mut out, &format_item(&item, format, Some(&stanza)))? {
                        stopped_by_pipe = true;
                        break;
                    }
                    printed += 1;
                }
                if stopped_by_pipe {
                    break;
                }
            }
            Ok(None) => {
                if last_traffic.elapsed() >= KEEPALIVE {
                    last_traffic = Instant::now();
                    // An XEP-0199 ping proves the server is alive (a whitespace keepalive
                    // would sit in a socket buffer towards a dead peer). Any reply, even
                    // an error from a server without ping, is a sign of life.
                    let domain = settings.domain.clone();
                    match conn.iq("get", Some(&domain), &ping_body(), "ping the server") {
                        Ok(_) | Err(ClientError::Xmpp(_)) => {}
                        Err(e) if e.is_transient() => match reconnect(&mut settings, node, &e)? {
                            Some(c) => conn = c,
                            None => return Ok(()),
                        },
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) if e.is_transient() => {
                before_items = 0;
                match reconnect(&mut settings, node, &e)? {
                    Some(c) => conn = c,
                    None => return Ok(()),
                }
                last_traffic = Instant::now();
            }
            Err(e) => return Err(e),
        }
    }
    let jid = conn.jid().to_owned();
    let unsub = conn.iq(
        "set",
        Some(&settings.service),
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
