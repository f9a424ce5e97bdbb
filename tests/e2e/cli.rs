//! End-to-end tests of the command-line client (`kinglet pub|sub|nodes|items|node`, docs/cli.md):
//! the real binary against the real daemon, over plaintext loopback, STARTTLS and direct TLS,
//! across a daemon restart, and against Prosody from Debian (ignored unless asked for with
//! `--ignored`: it needs `prosody` installed, as `.ci/run` does); also that
//! every command ends quietly when stdout is a closed pipe.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::client::Client;
use super::sub_cuts::Proxy;
use super::{Daemon, Options, TempDir, bin, kinglet, make_cert};

const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";

/// Runs `kinglet ARGS` with `stdin`, bounded by 60 s.
pub(super) fn cli(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinglet");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        // The command may exit (usage error) before it reads stdin.
        let _ = input.write_all(s.as_bytes());
    }
    drop(input);
    finished(child, Duration::from_secs(60), &format!("kinglet {args:?}"))
}

/// Waits for `child` to exit, `limit` at most (else kills it and fails the test, naming
/// `what`); its output.
pub(super) fn finished(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub(super) fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A daemon without TLS (plaintext is allowed because it is loopback).
pub(super) fn plain_daemon() -> Daemon {
    Daemon::start(Options {
        tls: false,
        direct_tls: false,
        ..Options::default()
    })
}

/// Writes `pass` to a file in `dir` and returns the login flags for `user@localhost`.
pub(super) fn login_args(dir: &Path, server: &str, user: &str, pass: &str) -> Vec<String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let f = dir.join(format!("{user}-{n}.pw"));
    std::fs::write(&f, format!("{pass}\n")).expect("write password file");
    vec![
        "--server".into(),
        server.into(),
        "--jid".into(),
        format!("{user}@localhost"),
        "--password-file".into(),
        f.display().to_string(),
    ]
}

/// `kinglet MORE BASE` with no stdin, asserting success; its stdout.
fn run_ok(base: &[String], more: &[&str]) -> String {
    ok(cli(&with(base, more), None))
}

/// Asserts that `line` starts with `start` and ends with `end`.
#[track_caller]
fn assert_starts_ends(line: &str, start: &str, end: &str) {
    assert!(line.starts_with(start), "{line}");
    assert!(line.ends_with(end), "{line}");
}

/// The whitespace-separated words of `s`, as command-line arguments.
fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

pub(super) fn with<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = more.to_vec();
    v.extend(base.iter().map(String::as_str));
    v
}

/// A spawned `kinglet sub` whose stdout lines are collected by a thread.
pub(super) struct Sub {
    child: Child,
    pub(super) lines: std::sync::mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Sub {
    pub(super) fn spawn(args: &[&str], dir: &Path) -> Sub {
        let stderr = dir.join(format!(
            "sub-{}.err",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn kinglet sub");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sub {
            child,
            lines: rx,
            stderr,
        }
    }

    pub(super) fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line from sub; stderr: {}", self.err()))
    }

    pub(super) fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status, if `sub` has exited.
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Waits for the exit status (at most 30 s).
    pub(super) fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "sub did not exit; stderr: {}",
                self.err()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.err().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "sub never said {needle:?}; stderr: {}",
                self.err()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Subscriptions to `node` as its owner sees them (XEP-0060 §8.8.1).
fn subscriptions(c: &mut Client, node: &str) -> Vec<String> {
    let r = c.iq(
        "subs",
        &format!(
            "<iq type='get' to='pubsub.localhost' id='subs'><pubsub xmlns='{OWNER}'>\
             <subscriptions node='{node}'/></pubsub></iq>"
        ),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    r.child("pubsub", OWNER)
        .and_then(|p| p.child("subscriptions", OWNER))
        .map(|s| {
            s.elements()
                .filter(|e| e.attr("subscription") == Some("subscribed"))
                .filter_map(|e| e.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cli_pub_then_sub_last_then_live_item() {
    let d = plain_daemon();
    let server = format!("127.0.0.1:{}", d.port);
    let alice = login_args(&d.dir.0, &server, "alice", "alice-pw");
    run_ok(
        &alice,
        &[
            "pub",
            "--node",
            "temp",
            "--create",
            "--set",
            "max_items=10",
            "--id",
            "r1",
            "<t xmlns='urn:example:temp'>20.5</t>",
        ],
    );
    for (id, v) in [("r2", "21.0"), ("r3", "21.5")] {
        let payload = format!("<t xmlns='urn:example:temp'>{v}</t>");
        run_ok(&alice, &["pub", "--node", "temp", "--id", id, &payload]);
    }
    // --last 2 prints the two newest, oldest first; then a live item ends --count 3.
    let sub_args = with(
        &alice,
        &["sub", "--node", "temp", "--last", "2", "--count", "3"],
    );
    let mut sub = Sub::spawn(&sub_args, &d.dir.0);
    assert_eq!(sub.line(), "<t xmlns=\"urn:example:temp\">21.0</t>");
    assert_eq!(sub.line(), "<t xmlns=\"urn:example:temp\">21.5</t>");
    run_ok(
        &alice,
        &[
            "pub",
            "--node",
            "temp",
            "<t xmlns='urn:example:temp'>22.0</t>",
        ],
    );
    assert_eq!(sub.line(), "<t xmlns=\"urn:example:temp\">22.0</t>");
    assert!(sub.wait().success(), "{}", sub.err());

    // nodes, items (same order), items --max.
    assert_eq!(run_ok(&alice, &["nodes"]), "temp\n");
    let items = run_ok(&alice, &["items", "temp"]);
    assert_eq!(items.lines().count(), 4, "{items}");
    assert!(
        items.lines().next().is_some_and(|l| l.contains("20.5")),
        "{items}"
    );
    let items = run_ok(&alice, &["items", "temp", "--max", "1"]);
    assert_eq!(items, "<t xmlns=\"urn:example:temp\">22.0</t>\n");
    // Anonymous login on loopback (the default): a live item from anyone (publish_model open;
    // `--config KEY=VALUE` is the old spelling of `--set`).
    let anon = ["--server", server.as_str()];
    run_ok(
        &alice,
        &["node", "create", "open", "--config", "publish_model=open"],
    );
    let sub_args = [
        &[
            "sub",
            "--node",
            "open",
            "--count",
            "1",
            "--format",
            "raw",
            "--verbose",
        ][..],
        &anon[..],
    ]
    .concat();
    let mut sub = Sub::spawn(&sub_args, &d.dir.0);
    sub.wait_stderr("subscribed to node 'open'");
    ok(cli(
        &[
            &[
                "pub",
                "--node",
                "open",
                "<a xmlns='urn:example:alert'>door</a>",
            ][..],
            &anon[..],
        ]
        .concat(),
        None,
    ));
    let raw = sub.line();
    assert!(raw.starts_with("<message"), "{raw}");
    assert!(
        raw.contains("http://jabber.org/protocol/pubsub#event") && raw.contains(">door</a>"),
        "{raw}"
    );
    assert!(sub.wait().success(), "{}", sub.err());
}

#[test]
fn cli_json_round_trip_and_stdin_lines() {
    let d = plain_daemon();
    let server = format!("127.0.0.1:{}", d.port);
    let alice = login_args(&d.dir.0, &server, "alice", "alice-pw");
    run_ok(&alice, &["node", "create", "readings"]);
    let sub_args = with(
        &alice,
        &words("sub --node readings --count 4 --format json --verbose"),
    );
    let mut sub = Sub::spawn(&sub_args, &d.dir.0);
    sub.wait_stderr("subscribed to node");
    // --json: pretty JSON in, minified JSON out, inside an XEP-0335 container on the wire.
    ok(cli(
        &with(
            &alice,
            &[
                "pub",
                "--node",
                "readings",
                "--json",
                "--id",
                "j1",
                "{ \"t\": 21.5,\n \"tags\": [\"a\\\"b\", null] }",
            ],
        ),
        None,
    ));
    let line = sub.line();
    assert_starts_ends(
        &line,
        "{\"node\":\"readings\",\"id\":\"j1\",\"publisher\":\"alice@localhost",
        ",\"payload\":{\"t\":21.5,\"tags\":[\"a\\\"b\",null]}}",
    );
    let xml = run_ok(&alice, &["items", "readings"]);
    assert_eq!(
        xml,
        "<json xmlns=\"urn:xmpp:json:0\">{\"t\":21.5,\"tags\":[\"a\\\"b\",null]}</json>\n"
    );

    // --lines: one item per non-empty line, from stdin.
    ok(cli(
        &with(
            &alice,
            &["pub", "--node", "readings", "--json", "--lines", "-"],
        ),
        Some("{\"n\":1}\n\n{\"n\":2}\r\n[3]\n"),
    ));
    for want in ["{\"n\":1}", "{\"n\":2}", "[3]"] {
        let line = sub.line();
        assert!(line.ends_with(&format!(",\"payload\":{want}}}")), "{line}");
    }
    assert!(sub.wait().success(), "{}", sub.err());
    // An XML payload from stdin (`-`) and in --format json: the payload as an XML string.
    ok(cli(
        &with(&alice, &["pub", "--node", "readings", "--id", "x", "-"]),
        Some("<r xmlns='urn:x'>a\"b</r>\n"),
    ));
    let items = run_ok(
        &alice,
        &["items", "readings", "--format", "json", "--max", "1"],
    );
    assert!(
        items.contains("\"payload\":\"<r xmlns=\\\"urn:x\\\">a\\\"b</r>\"}"),
        "{items}"
    );
    // A bad line stops --lines with exit 65 and names the line; earlier lines are published.
    let o = cli(
        &with(&alice, &["pub", "--node", "readings", "--lines"]),
        Some("<ok xmlns='urn:x'/>\nnot xml\n"),
    );
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    let items = run_ok(&alice, &["items", "readings", "--max", "1"]);
    assert_eq!(items, "<ok xmlns=\"urn:x\"/>\n");
}

#[test]
fn cli_errors_have_distinct_exit_codes() {
    let d = plain_daemon();
    let server = format!("127.0.0.1:{}", d.port);
    let alice = login_args(&d.dir.0, &server, "alice", "alice-pw");
    // A missing node without --create: exit 1 with the XMPP condition; nothing is created
    // (Kinglet would auto-create on publish).
    let o = cli(
        &with(&alice, &["pub", "--node", "nope", "<a xmlns='urn:x'/>"]),
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("item-not-found") && stderr(&o).contains("--create"),
        "{}",
        stderr(&o)
    );
    assert_eq!(run_ok(&alice, &["nodes"]), "");
    let o = cli(&with(&alice, &["items", "nope"]), None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("item-not-found"), "{}", stderr(&o));
    // An XMPP error from the server: bob may not publish to alice's node (publishers model).
    run_ok(&alice, &["node", "create", "mine"]);
    let bob = login_args(&d.dir.0, &server, "bob", "bob-pw");
    let o = cli(
        &with(&bob, &["pub", "--node", "mine", "<a xmlns='urn:x'/>"]),
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));
    let o = cli(&with(&bob, &["node", "delete", "mine"]), None);
    assert!(
        stderr(&o).contains("forbidden") && o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
    // Wrong password: 77.
    let wrong = login_args(&d.dir.0, &server, "alice", "not-the-password");
    let o = cli(&with(&wrong, &["nodes"]), None);
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    assert!(stderr(&o).contains("not-authorized"), "{}", stderr(&o));
    // Nothing listening: 69.
    let port = free_port();
    let o = cli(&["nodes", "--server", &format!("127.0.0.1:{port}")], None);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    // Bad payloads: 65, before connecting.
    for bad in [
        "<a>no namespace</a>",
        "<a xmlns='urn:x'>",
        "text",
        "<a xmlns='urn:x'/><b xmlns='urn:x'/>",
    ] {
        let o = cli(&with(&alice, &["pub", "--node", "mine", bad]), None);
        assert_eq!(o.status.code(), Some(65), "{bad}: {}", stderr(&o));
    }
    let o = cli(
        &with(&alice, &["pub", "--node", "mine", "--json", "{\"a\":}"]),
        None,
    );
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    // Usage errors: 64.
    for bad in [
        &["pub", "--node", "x"][..],
        &["pub", "<a xmlns='urn:x'/>"],
        &["sub", "--node", "x", "--format", "yaml"],
        &["nodes", "--tls", "sometimes"],
        &["nodes", "--jid", "alice@localhost"],
        &["node", "frob", "x"],
        &[
            "pub",
            "--node",
            "x",
            "--config",
            "a=b",
            "<a xmlns='urn:x'/>",
        ],
        &["pub", "--node", "x", "--set", "a=b", "<a xmlns='urn:x'/>"],
    ] {
        let o = cli(bad, None);
        assert_eq!(o.status.code(), Some(64), "{bad:?}: {}", stderr(&o));
    }
    // node config: show, change, show again; delete.
    run_ok(
        &alice,
        &["node", "config", "mine", "max_items=3", "title=My node"],
    );
    let cfg = run_ok(&alice, &["node", "config", "mine"]);
    assert!(cfg.lines().any(|l| l == "max_items=3"), "{cfg}");
    assert!(cfg.lines().any(|l| l == "title=My node"), "{cfg}");
    let o = cli(
        &with(&alice, &["node", "config", "mine", "no_such_field=1"]),
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    run_ok(&alice, &["node", "delete", "mine"]);
    assert_eq!(run_ok(&alice, &["nodes"]), "");
    // `--set` and its old spelling `--config` configure a node the same way.
    for (node, flag) in [("by-set", "--set"), ("by-config", "--config")] {
        run_ok(
            &alice,
            &["node", "create", node, flag, "max_items=7", flag, "title=T"],
        );
    }
    let by_set = run_ok(&alice, &["node", "config", "by-set"]);
    assert!(by_set.lines().any(|l| l == "max_items=7"), "{by_set}");
    assert!(by_set.lines().any(|l| l == "title=T"), "{by_set}");
    let by_config = run_ok(&alice, &["node", "config", "by-config"]);
    assert_eq!(by_set, by_config);
}

/// A loopback port free at the time of asking.
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn cli_tls_ca_file_starttls_direct_insecure_and_ctrl_c_unsubscribes() {
    let d = Daemon::start(Options::default());
    let cert = d.cert.clone().expect("cert");
    let ca = cert.display().to_string();
    let server = format!("127.0.0.1:{}", d.port);
    let direct = format!("127.0.0.1:{}", d.tls_port.expect("tls port"));
    let alice = login_args(&d.dir.0, &server, "alice", "alice-pw");
    // STARTTLS (offered, so used) with the daemon's certificate as the CA.
    run_ok(&alice, &["node", "create", "tls", "--ca-file", &ca]);
    run_ok(
        &alice,
        &[
            "pub",
            "--node",
            "tls",
            "--ca-file",
            &ca,
            "--tls",
            "starttls",
            "<a xmlns='urn:x'>1</a>",
        ],
    );
    // Direct TLS.
    let alice_direct = login_args(&d.dir.0, &direct, "alice", "alice-pw");
    run_ok(
        &alice_direct,
        &[
            "pub",
            "--node",
            "tls",
            "--tls",
            "direct",
            "--ca-file",
            &ca,
            "<a xmlns='urn:x'>2</a>",
        ],
    );
    // Without the CA the self-signed certificate is refused (76); --insecure warns and works.
    let o = cli(&with(&alice, &["nodes"]), None);
    assert_eq!(o.status.code(), Some(76), "{}", stderr(&o));
    assert!(stderr(&o).contains("certificate"), "{}", stderr(&o));
    let o = cli(&with(&alice, &["nodes", "--insecure"]), None);
    assert_eq!(stdout(&o), "tls\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("WARNING") && stderr(&o).contains("NOT verified"),
        "{}",
        stderr(&o)
    );
    // --tls off against a server that offers TLS: plaintext on loopback, SCRAM works.
    assert_eq!(
        run_ok(&alice, &["items", "tls", "--tls", "off"])
            .lines()
            .count(),
        2
    );

    // Ctrl-C: sub unsubscribes before it exits, with status 0.
    let mut owner = Client::login(d.port, &cert, "alice", "alice-pw", "owner");
    assert!(subscriptions(&mut owner, "tls").is_empty());
    let sub_args = with(
        &alice,
        &[
            "sub",
            "--node",
            "tls",
            "--ca-file",
            &ca,
            "--resource",
            "watch",
        ],
    );
    let mut sub = Sub::spawn(&sub_args, &d.dir.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while subscriptions(&mut owner, "tls") != ["alice@localhost/watch"] {
        assert!(Instant::now() < deadline, "never subscribed: {}", sub.err());
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = Command::new("kill")
        .args(["-INT", &sub.child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(st.success());
    assert!(sub.wait().success(), "{}", sub.err());
    assert!(
        subscriptions(&mut owner, "tls").is_empty(),
        "still subscribed after Ctrl-C"
    );
}

/// Writes a daemon configuration for a fixed port (so a client can reconnect to the same
/// address) and adds alice.
fn fixed_config(dir: &Path, port: u16) {
    let config = dir.join("kinglet.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"localhost\"\ndata_dir = \"{}\"\n[c2s]\nlisten = [\"127.0.0.1:{port}\"]\n\
             [auth]\nscram_iterations = 4096\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let out = kinglet(&["user", "add", "alice", "--password", "alice-pw"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the daemon of [`fixed_config`].
fn start_fixed(dir: &Path, log: &str) -> Child {
    let config = dir.join("kinglet.toml");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("KINGLET_PRINT_PORTS", "1")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(log)).expect("log"),
        ))
        .spawn()
        .expect("spawn daemon");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines.next().expect("daemon exited").expect("line");
    assert!(line.starts_with("LISTENING c2s"), "{line}");
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn cli_sub_reconnects_after_daemon_restart() {
    let dir = TempDir::new("cli-restart");
    let port = free_port();
    fixed_config(&dir.0, port);
    let mut daemon = start_fixed(&dir.0, "d1.log");
    let server = format!("127.0.0.1:{port}");
    let alice = login_args(&dir.0, &server, "alice", "alice-pw");
    run_ok(&alice, &["node", "create", "alerts"]);
    let sub_args = with(
        &alice,
        &words("sub --node alerts --count 2 --resource r --verbose"),
    );
    let mut sub = Sub::spawn(&sub_args, &dir.0);
    sub.wait_stderr("subscribed to node");
    run_ok(
        &alice,
        &["pub", "--node", "alerts", "<a xmlns='urn:x'>before</a>"],
    );
    assert_eq!(sub.line(), "<a xmlns=\"urn:x\">before</a>");

    let _ = daemon.kill();
    let _ = daemon.wait();
    sub.wait_stderr("reconnecting in 1s");
    // Stay down long enough for at least one failed attempt and a longer back-off.
    sub.wait_stderr("reconnecting in 2s");
    let mut daemon = start_fixed(&dir.0, "d2.log");
    sub.wait_stderr("reconnected and subscribed");
    run_ok(
        &alice,
        &["pub", "--node", "alerts", "<a xmlns='urn:x'>after</a>"],
    );
    assert_eq!(sub.line(), "<a xmlns=\"urn:x\">after</a>");
    assert!(sub.wait().success(), "{}", sub.err());
    assert!(sub.err().contains("connection lost"), "{}", sub.err());
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// A pipe without a reader, for a child's stdout: the read end's only holder (`true`) has
/// exited before the child starts, so every write to it fails with EPIPE, deterministically.
fn closed_pipe() -> Stdio {
    let mut reader = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn true");
    let write_end = reader.stdin.take().expect("pipe");
    reader.wait().expect("wait for true");
    Stdio::from(write_end)
}

/// Runs `kinglet ARGS` (in `cwd`) with its stdout a pipe nobody reads, as in
/// `kinglet ... | head -0`, and asserts that it ends quietly: exit 0, not killed by a signal,
/// nothing on stderr (no "failed printing to stdout: Broken pipe" panic).
fn assert_quiet_into_closed_pipe(args: &[&str], cwd: &Path) {
    use std::os::unix::process::ExitStatusExt;
    let o = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run kinglet");
    assert_eq!(o.status.signal(), None, "{args:?}: killed: {}", stderr(&o));
    assert_eq!(
        (o.status.code(), stderr(&o).as_str()),
        (Some(0), ""),
        "kinglet {args:?} into a closed pipe"
    );
}

/// Every command that writes to stdout stops quietly when the reader goes away
/// (issue 9: `kinglet pub --help | head -1` aborted with 134).
#[test]
fn cli_every_command_exits_quietly_when_stdout_is_closed() {
    let dir = TempDir::new("epipe");
    let cfg = dir.0.join("kinglet.toml");
    std::fs::write(
        &cfg,
        format!(
            "domain = \"localhost\"\ndata_dir = \"{}\"\n[auth]\nscram_iterations = 4096\n",
            dir.0.join("data").display()
        ),
    )
    .expect("config");
    let c = cfg.to_str().expect("utf-8 path");
    for args in [
        &["--help"][..],
        &["--version"],
        &["pub", "--help"],
        &["sub", "--help"],
        &["nodes", "--help"],
        &["items", "--help"],
        &["node", "--help"],
        &["node", "config", "--help"],
        &["user", "--help"],
        &["user", "list", "--help"],
        &["run", "--help"],
        &["check-config", "--help"],
        &["check-config"],
        &["check-config", "--config", c],
        // The account is changed even though nobody reads the confirmation.
        &["user", "add", "carol", "--password", "pw1", "--config", c],
        &["user", "add", "dave", "--password", "pw", "--config", c],
        &["user", "list", "--config", c],
        &[
            "user",
            "passwd",
            "carol",
            "--password",
            "pw2",
            "--config",
            c,
        ],
        &["user", "del", "dave", "--config", c],
    ] {
        assert_quiet_into_closed_pipe(args, &dir.0);
    }
    assert_eq!(
        stdout(&kinglet(&["user", "list"], &cfg)),
        "carol@localhost\n"
    );

    // The client commands, against a daemon.
    let d = plain_daemon();
    let server = format!("127.0.0.1:{}", d.port);
    let alice = login_args(&d.dir.0, &server, "alice", "alice-pw");
    for i in 1..=3 {
        let payload = format!("<t xmlns='urn:example:temp'>{i}</t>");
        run_ok(&alice, &["pub", "--node", "temp", "--create", &payload]);
    }
    for args in [
        &["nodes"][..],
        &["items", "temp"],
        &["items", "temp", "--format", "json"],
        &["node", "config", "temp"],
        &["sub", "--node", "temp", "--last", "3"],
    ] {
        assert_quiet_into_closed_pipe(&with(&alice, args), &dir.0);
    }
}

/// `kinglet user` in a directory without a database neither creates one (`./kinglet-data`)
/// nor reports an empty list: it names the path it looked at and exits 66 (issue 9).
/// Only `user add` creates the database.
#[test]
fn user_commands_refuse_a_missing_database_without_creating_it() {
    let dir = TempDir::new("no-db");
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .output()
            .expect("run kinglet")
    };
    for args in [
        &["user", "list"][..],
        &["user", "del", "alice"],
        &["user", "passwd", "alice", "--password", "pw"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(66), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains("no database at ./kinglet-data/kinglet.redb")
                && err.contains("built-in default")
                && err.contains("kinglet user add")
                && err.contains("--config"),
            "{args:?}: {err}"
        );
        assert!(
            !dir.0.join("kinglet-data").exists(),
            "{args:?} created ./kinglet-data"
        );
    }
    // With --config: the data_dir it resolves to, and the file it came from.
    let cfg = dir.0.join("kinglet.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").expect("config");
    let o = kinglet(&["user", "list"], &cfg);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    let err = stderr(&o);
    let db = dir.0.join("data").join("kinglet.redb");
    assert!(
        err.contains(&format!("no database at {}", db.display()))
            && err.contains(&cfg.display().to_string()),
        "{err}"
    );
    assert!(!dir.0.join("data").exists(), "user list created data/");
    // `user add` creates it; then the other commands work on it.
    let o = run(&["user", "add", "alice", "--password", "pw"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(dir.0.join("kinglet-data/kinglet.redb").is_file());
    assert_eq!(ok(run(&["user", "list"])), "alice@localhost\n");
    ok(run(&["user", "passwd", "alice", "--password", "pw2"]));
    ok(run(&["user", "del", "alice"]));
    assert_eq!(ok(run(&["user", "list"])), "");
}

/// A private Prosody instance, killed on drop.
struct Prosody {
    _child: super::Reaped,
    _dir: TempDir,
}

fn wait_port(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The same commands against Prosody (Debian's package, with its pubsub component): proof
/// that the client speaks standard XMPP. Ignored by default, so that a plain `cargo test`
/// reports it as ignored rather than passed without Prosody; `.ci/run` installs Prosody
/// and runs it with `cargo test --release --test integration -- --ignored --exact
/// e2e::cli::cli_against_prosody_from_debian`. Run that way it fails if Prosody is missing.
#[test]
#[ignore = "needs prosody (apt-get install prosody); .ci/run runs it with --ignored"]
fn cli_against_prosody_from_debian() {
    let have = Command::new("sh")
        .args(["-c", "command -v prosody && command -v prosodyctl"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have,
        "prosody and prosodyctl are not installed: this test needs Debian's prosody \
         (apt-get install prosody)"
    );
    let dir = TempDir::new("cli-prosody");
    let certs = dir.0.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let (cert, key) = make_cert(&certs);
    std::fs::rename(&cert, certs.join("localhost.crt")).expect("rename cert");
    std::fs::rename(&key, certs.join("localhost.key")).expect("rename key");
    let cert = certs.join("localhost.crt");
    let (c2s, direct) = (free_port(), free_port());
    let d = dir.0.display();
    let cfg = dir.0.join("prosody.cfg.lua");
    std::fs::create_dir_all(dir.0.join("data")).expect("data dir");
    std::fs::write(
        &cfg,
        format!(
            "run_as_root = true\npidfile = \"{d}/prosody.pid\"\ndata_path = \"{d}/data\"\n\
             log = {{ debug = \"{d}/prosody.log\" }}\n\
             interfaces = {{ \"127.0.0.1\" }}\nlocal_interfaces = {{ \"127.0.0.1\" }}\n\
             c2s_ports = {{ {c2s} }}\nc2s_direct_tls_ports = {{ {direct} }}\n\
             modules_enabled = {{ \"roster\", \"saslauth\", \"tls\", \"disco\", \"ping\", \"smacks\" }}\n\
             modules_disabled = {{ \"s2s\" }}\nallow_registration = false\n\
             admins = {{ \"alice@localhost\" }}\n\
             c2s_require_encryption = true\nauthentication = \"internal_hashed\"\n\
             password_hash = \"SHA-256\"\nstorage = \"internal\"\n\
             certificates = \"{d}/certs\"\n\
             ssl = {{ certificate = \"{d}/certs/localhost.crt\"; key = \"{d}/certs/localhost.key\"; }}\n\
             VirtualHost \"localhost\"\nComponent \"pubsub.localhost\" \"pubsub\"\n"
        ),
    )
    .expect("prosody config");
    for (user, pass) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        let st = Command::new("prosodyctl")
            .arg("--config")
            .arg(&cfg)
            .args(["register", user, "localhost", pass])
            .status()
            .expect("prosodyctl");
        assert!(st.success(), "prosodyctl register {user}");
    }
    let child = Command::new("prosody")
        .arg("--config")
        .arg(&cfg)
        .arg("-F")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.0.join("prosody.out")).expect("out"),
        ))
        .spawn()
        .expect("spawn prosody");
    let prosody = Prosody {
        _child: super::Reaped(child),
        _dir: dir,
    };
    let log = || {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(prosody._dir.0.join("prosody.out")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    };
    assert!(
        wait_port(c2s) && wait_port(direct),
        "prosody did not listen: {}",
        log()
    );

    let ca = cert.display().to_string();
    let server = format!("127.0.0.1:{c2s}");
    let mut alice = login_args(&prosody._dir.0, &server, "alice", "alice-pw");
    alice.extend(["--ca-file".to_owned(), ca.clone()]);
    // Prosody requires TLS (STARTTLS); node creation is for admins (alice).
    let o = cli(
        &with(
            &alice,
            &["pub", "--node", "sensors", "<t xmlns='urn:x'>1</t>"],
        ),
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("item-not-found"), "{}", stderr(&o));
    run_ok(
        &alice,
        &[
            "pub",
            "--node",
            "sensors",
            "--create",
            "--id",
            "a",
            "<t xmlns='urn:x'>1</t>",
        ],
    );
    run_ok(
        &alice,
        &[
            "pub",
            "--node",
            "sensors",
            "--json",
            "--id",
            "b",
            "{\"t\": 2}",
        ],
    );
    let mut bob = login_args(&prosody._dir.0, &server, "bob", "bob-pw");
    bob.extend(["--ca-file".to_owned(), ca.clone()]);
    let sub_args = with(
        &bob,
        &[
            "sub", "--node", "sensors", "--last", "2", "--count", "3", "--format", "json",
        ],
    );
    let mut sub = Sub::spawn(&sub_args, &prosody._dir.0);
    let first = sub.line();
    assert_starts_ends(
        &first,
        "{\"node\":\"sensors\",\"id\":\"a\"",
        "\"payload\":\"<t xmlns=\\\"urn:x\\\">1</t>\"}",
    );
    let second = sub.line();
    assert!(second.ends_with("\"payload\":{\"t\":2}}"), "{second}");
    // A live item, published over direct TLS from stdin lines.
    let mut alice_direct = login_args(
        &prosody._dir.0,
        &format!("127.0.0.1:{direct}"),
        "alice",
        "alice-pw",
    );
    alice_direct.extend([
        "--ca-file".to_owned(),
        ca.clone(),
        "--tls".to_owned(),
        "direct".to_owned(),
    ]);
    ok(cli(
        &with(
            &alice_direct,
            &["pub", "--node", "sensors", "--json", "--lines"],
        ),
        Some("{\"t\":3}\n"),
    ));
    let third = sub.line();
    assert!(third.ends_with("\"payload\":{\"t\":3}}"), "{third}");
    assert!(sub.wait().success(), "{}", sub.err());
    assert_eq!(run_ok(&alice, &["nodes"]), "sensors\n");
    assert_eq!(run_ok(&alice, &["items", "sensors"]).lines().count(), 3);
    let wrong = login_args(&prosody._dir.0, &server, "alice", "wrong");
    let o = cli(&with(&wrong, &["nodes", "--ca-file", &ca]), None);
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));

    // XEP-0198 with a stack nobody here wrote (Prosody's mod_smacks): a `sub` whose
    // connection is cut resumes its session and prints each item once; with --no-resume it
    // subscribes again and catches up (Prosody's items with RSM).
    run_ok(&alice, &["node", "create", "cuts"]);
    let proxy = Proxy::start(c2s);
    let mut bob_cut = login_args(
        &prosody._dir.0,
        &format!("127.0.0.1:{}", proxy.port),
        "bob",
        "bob-pw",
    );
    bob_cut.extend(["--ca-file".to_owned(), ca.clone()]);
    let mut next = 1;
    for (flags, said) in [
        (&[][..], "reconnected and resumed the session"),
        (&["--no-resume"], "caught up 3 items"),
    ] {
        let mut args = with(
            &bob_cut,
            &["sub", "--node", "cuts", "--count", "6", "--verbose"],
        );
        args.extend_from_slice(flags);
        let mut sub = Sub::spawn(&args, &prosody._dir.0);
        sub.wait_stderr("subscribed to node");
        let items: Vec<String> = (next..next + 6)
            .map(|i| format!("<n xmlns=\"urn:x\">{i}</n>"))
            .collect();
        next += 6;
        let publish = |lines: &[String]| {
            ok(cli(
                &with(&alice, &["pub", "--node", "cuts", "--lines"]),
                Some(&(lines.join("\n") + "\n")),
            ))
        };
        publish(&items[..3]);
        let mut got: Vec<String> = (0..3).map(|_| sub.line()).collect();
        proxy.cut();
        sub.wait_stderr("connection lost");
        publish(&items[3..]);
        proxy.up(c2s);
        got.extend((0..3).map(|_| sub.line()));
        assert!(sub.wait().success(), "{}", sub.err());
        assert_eq!(got, items, "{}", sub.err());
        assert!(sub.err().contains(said), "{flags:?}: {}", sub.err());
    }
    run_ok(&alice, &["node", "delete", "cuts"]);
    run_ok(&alice, &["node", "delete", "sensors"]);
    assert_eq!(run_ok(&alice, &["nodes"]), "");
}

/// Issue 11: `check-config` on the shipped `systemd/kinglet.toml` prints the worst-case
/// memory table (a row per bound, the total) after the configuration, compared with the
/// memory limit (the cgroup's `memory.max`, or the unit's `MemoryMax=128M`); a total above
/// it is a warning, not a failure.
#[test]
fn check_config_prints_the_memory_total_for_the_shipped_config() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/kinglet.toml");
    let o = cli(&["check-config", "--config", shipped], None);
    let out = ok(o.clone());
    assert!(out.contains("domain = \"localhost\""), "{out}");
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("# Worst-case memory"))
        .collect();
    assert!(table.len() > 20, "{out}");
    assert!(table.iter().all(|l| l.starts_with('#')), "{out}");
    for key in [
        "limits.outbox_max_bytes",
        "limits.pubsub_backlog_bytes",
        "limits.commit_batch_bytes",
        "limits.caps_cache_entries",
        "store.cache_bytes",
    ] {
        assert!(table.iter().any(|l| l.contains(key)), "{key}: {out}");
    }
    // The shipped cache_bytes = 4194304 is the row of store.cache_bytes.
    assert!(
        table
            .iter()
            .any(|l| l.contains("4194304  store.cache_bytes")),
        "{out}"
    );
    let total = table
        .iter()
        .find(|l| l.split_whitespace().nth(2) == Some("total"))
        .unwrap_or_else(|| panic!("no total line: {out}"));
    let total: u64 = total.split_whitespace().nth(1).unwrap().parse().unwrap();
    let sum: u64 = table
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(1);
            let bytes = w.next()?.parse::<u64>().ok()?;
            (w.next()? != "total").then_some(bytes)
        })
        .sum();
    assert_eq!(total, sum, "{out}");
    let last = table.last().expect("comparison line");
    assert!(last.contains("MemoryMax="), "{out}");
    let over = last.starts_with("# WARNING:");
    assert!(over || last.starts_with("# compared with "), "{last}");
    assert_eq!(
        stderr(&o).contains("kinglet: warning: the worst-case memory total"),
        over,
        "{}",
        stderr(&o)
    );
}
