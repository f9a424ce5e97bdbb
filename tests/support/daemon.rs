//! The kinglet daemon as the end-to-end tests and the benchmarks start it: a temp dir, a
//! config file, `kinglet run` with `KINGLET_PRINT_PORTS`, its ports read from stdout.
//! Killed on drop, its dir removed. The one launcher for tests/e2e (`tests/e2e/mod.rs`
//! includes it) and benches/idle.rs, benches/pubsub.rs (`#[path]`-included); not a test
//! target itself, so each includer uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh, empty temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("kinglet-test-{}-{}-{}", std::process::id(), tag, n));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

/// A `TempDir` stands for its path: `dir.join(..)`.
impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `localhost`; returns (cert path, key path).
pub fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    (cert, key)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kinglet")
}

/// Runs `kinglet <args> --config <config>` to completion.
pub fn kinglet(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run kinglet")
}

/// Accounts with the password `pw`, written straight into the store in `data` (one SCRAM
/// derivation for all: hundreds take a moment, not a process each).
pub fn add_accounts<S: AsRef<str>>(data: &Path, users: &[S], iterations: u32) {
    let store = kinglet::store::Store::open(data, 1 << 20).expect("store");
    let creds = kinglet::sasl::StoredCredentials::derive(
        &kinglet::system::SystemEnv::new(),
        "pw",
        iterations,
    )
    .to_bytes();
    for u in users {
        store.user_add(u.as_ref(), &creds).expect("add account");
    }
}

/// A running daemon, killed on drop (and its dir removed).
/// A child process that is killed and reaped when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub tls_port: Option<u16>,
    pub dir: TempDir,
    pub config: PathBuf,
    pub cert: Option<PathBuf>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Options {
    pub tls: bool,
    pub direct_tls: bool,
    pub anonymous: &'static str,
    pub extra: &'static str,
    /// Lines added to the `[c2s]` table (`extra` comes after `[auth]`).
    pub c2s_extra: &'static str,
    pub users: &'static [(&'static str, &'static str)],
    /// More accounts, all with the password `pw`, written straight into the store before
    /// the daemon starts ([`add_accounts`]).
    pub accounts: Vec<String>,
    /// PBKDF2 iterations of `accounts` (4096 if 0).
    pub account_iterations: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: true,
            direct_tls: true,
            anonymous: "loopback",
            extra: "",
            c2s_extra: "",
            users: &[("alice", "alice-pw"), ("bob", "bob-pw")],
            accounts: Vec::new(),
            account_iterations: 0,
        }
    }
}

/// Starts `kinglet run --config <config>` with `env`, its stderr to `log`, and waits (20 s
/// at most) for its c2s port and, with `want_tls`, its direct-TLS port. Its stdout is kept
/// drained in the background so that the daemon never blocks on a full pipe.
pub fn launch(
    config: &Path,
    log: &Path,
    want_tls: bool,
    env: &[(&str, &OsStr)],
) -> (Child, u16, Option<u16>) {
    let mut child = Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("KINGLET_PRINT_PORTS", "1")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).expect("log file")))
        .spawn()
        .expect("spawn kinglet");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut port, mut tls_port) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while port.is_none() || (want_tls && tls_port.is_none()) {
        assert!(Instant::now() < deadline, "daemon did not report its ports");
        let Some(Ok(line)) = lines.next() else {
            panic!(
                "daemon exited early: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        };
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() == 3 && parts[0] == "LISTENING" {
            let p: u16 = parts[2].rsplit(':').next().unwrap().parse().unwrap();
            if parts[1] == "c2s" {
                port = Some(p)
            } else {
                tls_port = Some(p)
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, port.expect("c2s port"), tls_port)
}

/// Runs `kinglet run --config <config>` (stdout discarded) until it exits by itself, 20 s
/// at most (else it is killed and the test fails with `what`); its status and stderr.
pub fn run_to_exit(config: &Path, what: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinglet");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (status, stderr)
}

impl Daemon {
    pub fn start(opts: Options) -> Daemon {
        Daemon::start_env(opts, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables for the daemon.
    pub fn start_env(opts: Options, env: &[(&str, &OsStr)]) -> Daemon {
        let dir = TempDir::new("daemon");
        let mut toml = format!(
            "domain = \"localhost\"\ndata_dir = \"{}\"\nlog_level = \"debug\"\n",
            dir.0.join("data").display()
        );
        toml.push_str("[c2s]\nlisten = [\"127.0.0.1:0\"]\n");
        if opts.direct_tls {
            toml.push_str("direct_tls_listen = [\"127.0.0.1:0\"]\n");
        }
        toml.push_str(&format!("allow_anonymous = \"{}\"\n", opts.anonymous));
        toml.push_str(opts.c2s_extra);
        let mut cert = None;
        if opts.tls || opts.direct_tls {
            let (c, k) = make_cert(&dir.0);
            toml.push_str(&format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                c.display(),
                k.display()
            ));
            cert = Some(c);
        }
        toml.push_str("[auth]\nscram_iterations = 4096\n");
        toml.push_str(opts.extra);
        let config = dir.0.join("kinglet.toml");
        std::fs::write(&config, toml).expect("write config");
        for (u, p) in opts.users {
            let out = kinglet(&["user", "add", u, "--password", p], &config);
            assert!(
                out.status.success(),
                "user add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if !opts.accounts.is_empty() {
            let iterations = match opts.account_iterations {
                0 => 4096,
                n => n,
            };
            add_accounts(&dir.0.join("data"), &opts.accounts, iterations);
        }
        Daemon::launch_in(dir, config, cert, opts.direct_tls, env)
    }

    /// [`launch`]es the daemon on `config` in `dir`, its stderr to `dir/stderr.log`.
    fn launch_in(
        dir: TempDir,
        config: PathBuf,
        cert: Option<PathBuf>,
        want_tls: bool,
        env: &[(&str, &OsStr)],
    ) -> Daemon {
        let (child, port, tls_port) = launch(&config, &dir.join("stderr.log"), want_tls, env);
        Daemon {
            child,
            port,
            tls_port,
            dir,
            config,
            cert,
        }
    }

    /// Starts the daemon in `dir` with `config` after a `data_dir = "<dir>/data"` line
    /// (the benchmarks' start: the caller has prepared the dir); its stderr goes to
    /// `dir/stderr.log`.
    pub fn start_in(dir: TempDir, config: &str) -> Daemon {
        let toml = format!("data_dir = \"{}\"\n{config}", dir.join("data").display());
        let config = dir.join("k.toml");
        std::fs::write(&config, toml).expect("config");
        Daemon::launch_in(dir, config, None, false, &[])
    }

    /// Kills the daemon and starts it again on the same configuration and data, its
    /// stderr to `log` in its dir.
    pub fn restart(&mut self, log: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let want_tls = self.tls_port.is_some();
        let (child, port, tls_port) = launch(&self.config, &self.dir.join(log), want_tls, &[]);
        self.child = child;
        self.port = port;
        self.tls_port = tls_port;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }
}
