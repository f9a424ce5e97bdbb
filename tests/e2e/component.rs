//! XEP-0114 component mode against Debian's Prosody 0.12 and ejabberd 23.01: each hosts
//! Kinglet (`[component]`, `[c2s] listen = []`) as an external component, and a slixmpp
//! user of that server creates a node at the component's JID, subscribes, publishes and
//! receives the notification, and presence-based delivery follows the presence the
//! server forwards (`tests/interop/slixmpp_component.py`). The servers are
//! started by `tests/interop/component_server.sh` on loopback.
//!
//! Ignored by default (they need the servers); run with
//! `cargo test --test integration -- --ignored e2e::component::`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cli::free_port;
use super::interop::python;
use super::{Reaped, TempDir, bin};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/component_server.sh")
}

/// A server started by `component_server.sh`, stopped (by its PID files) when dropped.
struct Server {
    kind: &'static str,
    env: Vec<(String, String)>,
}

impl Server {
    fn run(&self, verb: &str) -> std::process::Output {
        Command::new("bash")
            .arg(script())
            .args([verb, self.kind])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run component_server.sh")
    }

    fn start(&self) {
        let o = self.run("start");
        assert!(
            o.status.success(),
            "{} did not start:\n{}{}",
            self.kind,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}

/// The Kinglet daemon in component mode, killed when dropped.
struct Kinglet {
    _child: Reaped,
    log: PathBuf,
}

impl Kinglet {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log says `n` component connections were accepted.
    fn wait_connected(&self, n: usize) {
        self.wait_until(
            |log| log.matches("component: connected").count() >= n,
            "connect",
        );
    }

    /// Waits (bounded) until the log has `line`.
    fn wait_for(&self, line: &str) {
        self.wait_until(|log| log.contains(line), line);
    }

    fn wait_until(&self, done: impl Fn(&str) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if done(&self.log()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kinglet's log never showed {what:?}:\n{}", self.log());
    }
}

fn run_client(c2s: u16, service: &str, k: &Kinglet) {
    let py = python().expect("python with slixmpp (tests/interop/requirements.txt)");
    let out = Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/slixmpp_component.py"))
        .args(["--port", &c2s.to_string(), "--service", service])
        .output()
        .expect("run slixmpp_component.py");
    let text = super::interop::transcript(&out);
    assert!(
        out.status.success() && text.contains("9 passed, 0 failed"),
        "slixmpp through the component failed:\n{text}\n--- kinglet log ---\n{}",
        k.log()
    );
    assert!(
        !k.log().contains("readable by every user"),
        "the secret file is 0600:\n{}",
        k.log()
    );
}

/// Starts Kinglet in `dir` as the component `host` of the server's component port `comp`,
/// with `secret` in a 0600 secret file.
fn spawn_kinglet(dir: &Path, comp: u16, host: &str, secret: &str) -> Kinglet {
    std::fs::create_dir_all(dir).expect("kinglet dir");
    let secret_file = dir.join("component.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod secret");
    }
    let config = dir.join("k.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"kinglet.invalid\"\ndata_dir = \"{}\"\nlog_level = \"info\"\n\
             [c2s]\nlisten = []\n[pubsub]\ncreate_nodes = \"anyone\"\n\
             [component]\nserver = \"127.0.0.1:{comp}\"\njid = \"{host}\"\n\
             secret_file = \"{}\"\nreconnect_max_secs = 2\n",
            dir.join("data").display(),
            secret_file.display()
        ),
    )
    .expect("config");
    let log = dir.join("kinglet.log");
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("spawn kinglet");
    Kinglet {
        _child: Reaped(child),
        log,
    }
}

/// Starts `kind`, then Kinglet as its component; runs the slixmpp user. With `restart`,
/// first a Kinglet with a wrong secret must log the server's refusal, and after the run
/// the server is stopped and started again: Kinglet reconnects and serves again.
fn component_against(kind: &'static str, restart: bool) {
    let dir = TempDir::new(&format!("component-{kind}"));
    let (c2s, comp) = (free_port(), free_port());
    let secret = format!("s-{}-{}", std::process::id(), free_port());
    let host = "kpubsub.localhost";
    let server = Server {
        kind,
        env: vec![
            ("SRV_DIR".into(), dir.0.join("srv").display().to_string()),
            ("C2S_PORT".into(), c2s.to_string()),
            ("COMPONENT_PORT".into(), comp.to_string()),
            ("COMPONENT_SECRET".into(), secret.clone()),
            ("COMPONENT_HOST".into(), host.into()),
            ("USERS".into(), "alice bob carol".into()),
        ],
    };
    server.start();
    if restart {
        // A wrong secret: the server refuses the handshake, and the log says what to fix.
        let wrong = spawn_kinglet(&dir.0.join("wrong"), comp, host, "not-the-secret");
        wrong.wait_for("the server refused the handshake: check component.secret_file");
    }
    let k = spawn_kinglet(&dir.0.join("k"), comp, host, &secret);
    k.wait_connected(1);
    run_client(c2s, host, &k);
    if restart {
        let _ = server.run("stop");
        server.start();
        k.wait_connected(2);
        assert!(
            k.log().contains("component: not connected; retrying"),
            "no reconnect line:\n{}",
            k.log()
        );
        run_client(c2s, host, &k);
    }
}

#[test]
#[ignore = "needs prosody (apt-get install prosody) and slixmpp; run with --ignored"]
fn component_hosted_by_prosody_from_debian() {
    component_against("prosody", true);
}

#[test]
#[ignore = "needs ejabberd (apt-get install ejabberd) and slixmpp; run with --ignored"]
fn component_hosted_by_ejabberd_from_debian() {
    component_against("ejabberd", false);
}
