//! Idle-session memory benchmark for kinglet alone: starts the daemon, then runs the load
//! generator's `idle` scenario (`examples/loadgen/gen.rs`; the same code benches/compare.sh
//! runs against Prosody, ejabberd and mosquitto) on a fresh daemon per mode.
//!
//! `cargo bench --bench idle -- [--sessions N] [--mode plain|tls|both]`
//! Prints a readable line and one JSON line per run. Bounded: at most 20,000 sessions, 10 s
//! per read during a login.

#[path = "../examples/loadgen/gen.rs"]
mod r#gen;

#[path = "../tests/support/daemon.rs"]
mod daemon;

use daemon::Daemon;

fn start(users: usize, tls: bool) -> Daemon {
    let dir = daemon::TempDir::new(&format!("idle-{tls}"));
    // Accounts straight into the store (one derivation, no CLI start-up per user).
    let names: Vec<String> = (0..users).map(|i| format!("u{i}")).collect();
    daemon::add_accounts(&dir.join("data"), &names, 4096);
    daemon::make_cert(&dir);
    let config = format!(
        "log_level = \"warn\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n[limits]\nmax_connections = {}\n[tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
        users + 16,
        d = dir.display(),
    );
    Daemon::start_in(dir, &config)
}

fn run(n: usize, tls: bool) {
    let s = start(n, tls);
    let o = r#gen::Opts {
        name: "kinglet".into(),
        server: format!("127.0.0.1:{}", s.port),
        pid: Some(s.child.id()),
        ca: Some(s.dir.join("cert.pem")),
        count: n,
        tls,
        ..r#gen::Opts::default()
    };
    if let Err(e) = r#gen::idle(&o) {
        eprintln!("idle {n} tls={tls}: {e}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut n = 1000usize;
    let mut mode = "both".to_string();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--sessions" => {
                n = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(n)
                    .min(20_000);
                i += 1;
            }
            "--mode" => {
                mode = args.get(i + 1).cloned().unwrap_or(mode);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    if mode != "tls" {
        run(n, false);
    }
    if mode != "plain" {
        run(n, true);
    }
}
