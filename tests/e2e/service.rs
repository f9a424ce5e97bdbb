//! Service-manager integration of the real daemon: sd_notify readiness, watchdog and stop
//! notifications on a fake `NOTIFY_SOCKET`, SIGHUP certificate reload without dropping
//! sessions, and a clean exit 0 on SIGTERM.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use super::client::Client;
use super::{Daemon, Options, TempDir, make_cert};

/// Collects the datagrams the daemon sends to its notification socket.
struct Notifications {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn new(sock: UnixDatagram) -> Notifications {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notifications {
            sock,
            seen: Vec::new(),
        }
    }

    /// Wait until a datagram containing the line `line` arrives; return that datagram.
    fn wait_for(&mut self, line: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l == line || l.starts_with(line)) {
                    return msg;
                }
            }
        }
        panic!("no {line:?} notification; got {:?}", self.seen);
    }
}

fn signal(d: &Daemon, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &d.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -s {sig} failed");
}

/// Wait for the daemon to exit; its exit code.
fn wait_exit(d: &mut Daemon, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(st) = d.child.try_wait().expect("try_wait") {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Whether a direct-TLS handshake against the daemon succeeds when only `ca` is trusted.
fn tls_handshake_ok(port: u16, ca: &std::path::Path) -> bool {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(super::client::tls_config(ca), name).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return false;
        }
    }
    true
}

#[test]
fn notify_reload_and_clean_stop() {
    let sockdir = TempDir::new("notify");
    let path = sockdir.0.join("notify.sock");
    let mut notes = Notifications::new(UnixDatagram::bind(&path).expect("bind notify socket"));
    let mut d = Daemon::start_env(
        Options::default(),
        &[
            ("NOTIFY_SOCKET", path.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("200000")),
        ],
    );
    let ready = notes.wait_for("READY=1", Duration::from_secs(10));
    assert!(ready.contains("STATUS=serving localhost"), "{ready}");
    notes.wait_for("WATCHDOG=1", Duration::from_secs(5));

    let old_ca = d.cert.clone().expect("cert");
    let tls_port = d.tls_port.expect("direct TLS port");
    let mut alice = Client::login(d.port, &old_ca, "alice", "alice-pw", "before");

    // Keep a copy of the old certificate, then write a new key pair over the same files.
    let old_copy = sockdir.0.join("old.pem");
    std::fs::copy(&old_ca, &old_copy).expect("copy old cert");
    let (new_ca, _) = make_cert(&d.dir.0);
    assert_eq!(new_ca, old_ca, "make_cert overwrites the configured files");
    assert!(
        tls_handshake_ok(tls_port, &old_copy),
        "old certificate served before reload"
    );

    // The same reload lowers the log level from debug to info.
    assert!(d.log().contains("DEBUG"), "debug lines before the reload");
    let conf = std::fs::read_to_string(&d.config).expect("read config");
    assert!(conf.contains("log_level = \"debug\""), "{conf}");
    std::fs::write(
        &d.config,
        conf.replace("log_level = \"debug\"", "log_level = \"info\""),
    )
    .expect("rewrite config");

    signal(&d, "HUP");
    let st = notes.wait_for("STATUS=reloaded", Duration::from_secs(10));
    assert!(st.contains("cert.pem"), "{st}");
    assert!(st.contains("log level info"), "{st}");
    let log_at_reload = d.log().len();

    assert!(
        tls_handshake_ok(tls_port, &new_ca),
        "new certificate after SIGHUP"
    );
    assert!(
        !tls_handshake_ok(tls_port, &old_copy),
        "old certificate still served"
    );

    // The session opened before the reload is still there and routes both ways.
    let mut bob = Client::login(d.port, &new_ca, "bob", "bob-pw", "after");
    alice.send("<message to='bob@localhost/after' id='m1'><body>still here</body></message>");
    let m = bob.wait_for("message from alice", |e| e.name == "message");
    assert_eq!(m.attr("from"), Some("alice@localhost/before"));
    bob.send("<message to='alice@localhost/before' id='m2'><body>hi</body></message>");
    let m = alice.wait_for("message from bob", |e| e.name == "message");
    assert_eq!(m.attr("from"), Some("bob@localhost/after"));

    // Logins and messages log at debug level: nothing of that since the reload, but info is on.
    let since = d.log()[log_at_reload..].to_owned();
    assert!(
        !since.contains("DEBUG"),
        "debug lines after the reload: {since}"
    );

    // A broken key on reload: the error is reported and the running certificate is kept.
    std::fs::write(d.dir.0.join("key.pem"), "garbage").expect("break key");
    signal(&d, "HUP");
    notes.wait_for("STATUS=reload failed", Duration::from_secs(10));
    assert!(
        tls_handshake_ok(tls_port, &new_ca),
        "certificate kept after failed reload"
    );

    let t0 = Instant::now();
    signal(&d, "TERM");
    notes.wait_for("STOPPING=1", Duration::from_secs(4));
    let code = wait_exit(&mut d, Duration::from_secs(4));
    assert_eq!(
        code,
        Some(0),
        "exit status after SIGTERM; log:\n{}",
        d.log()
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert!(alice.wait_closed(Duration::from_secs(2)), "sessions closed");
    let log = d.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("still referenced"), "store not closed: {log}");

    // The store was closed cleanly: the daemon starts again on it at once.
    let out = super::kinglet(&["user", "list"], &d.config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
}

#[test]
fn abstract_notify_socket_and_sigint() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("kinglet-e2e-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut notes = Notifications::new(UnixDatagram::bind_addr(&addr).expect("bind abstract"));
    let value = format!("@{name}");
    let mut d = Daemon::start_env(
        Options {
            tls: false,
            direct_tls: false,
            ..Options::default()
        },
        &[("NOTIFY_SOCKET", OsStr::new(&value))],
    );
    notes.wait_for("READY=1", Duration::from_secs(10));
    signal(&d, "INT");
    notes.wait_for("STOPPING=1", Duration::from_secs(4));
    assert_eq!(wait_exit(&mut d, Duration::from_secs(4)), Some(0));
    assert!(!notes.seen.iter().any(|m| m.contains("WATCHDOG=1")));
}

#[test]
fn split_log_streams_for_procd() {
    let mut d = Daemon::start_env(
        Options {
            tls: false,
            direct_tls: false,
            ..Options::default()
        },
        &[("KINGLET_LOG_STREAMS", OsStr::new("split"))],
    );
    // A reload with a broken configuration file logs an error (to stderr).
    std::fs::write(&d.config, "domain = 42\n").expect("break config");
    signal(&d, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("reload failed") {
        assert!(Instant::now() < deadline, "no reload error in: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&d, "TERM");
    assert_eq!(wait_exit(&mut d, Duration::from_secs(4)), Some(0));
    let log = d.log();
    assert!(log.contains("ERROR"), "{log}");
    assert!(
        !log.contains(" INFO ") && !log.contains("DEBUG"),
        "info lines on stderr: {log}"
    );
    // No timestamps: every line starts with the level.
    for line in log.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        assert!(
            ["ERROR", "WARN"].contains(&first),
            "unexpected line {line:?}"
        );
    }
}
