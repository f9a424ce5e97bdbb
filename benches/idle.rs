//! Idle-session memory benchmark: N authenticated sessions with initial presence, and the
//! server's RSS per session, read from /proc/<pid>/status of the real daemon.
//!
//! `cargo bench --bench idle -- [--sessions N] [--mode plain|tls|both]`
//! Prints a table and one JSON line per run. Bounded: at most 20,000 sessions, 10 s per login.

#[path = "../tests/e2e/client.rs"]
#[allow(dead_code)]
mod client;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::Client;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Server {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(users: usize, tls: bool) -> Server {
    let dir =
        std::env::temp_dir().join(format!("kinglet-bench-idle-{}-{}", std::process::id(), tls));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    {
        // Accounts straight into the store (one process, no CLI start-up per user).
        let store = kinglet::store::Store::open(&data, 1 << 20).unwrap();
        let creds = kinglet::sasl::StoredCredentials::derive("pw", 4096).to_bytes();
        for i in 0..users {
            store.user_add(&format!("u{i}"), &creds).unwrap();
        }
    }
    let mut toml = format!(
        "data_dir = \"{}\"\nlog_level = \"warn\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n[limits]\nmax_connections = {}\n",
        data.display(),
        users + 16
    );
    if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
        toml.push_str(&format!(
            "[tls]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n",
            dir.display()
        ));
    }
    let cfg = dir.join("k.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kinglet"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("KINGLET_PRINT_PORTS", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let l = lines.next().expect("daemon output").unwrap();
        if let Some(rest) = l.strip_prefix("LISTENING c2s ") {
            break rest.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    Server { child, port, dir }
}

fn login(s: &Server, i: usize, tls: bool) -> Client {
    let mut c = Client::connect(s.port);
    c.open_stream();
    if tls {
        c.starttls(&s.dir.join("cert.pem"));
        c.open_stream();
    }
    let r = c.plain(&format!("u{i}"), "pw");
    assert_eq!(r.name, "success", "login {i}: {r:?}");
    let b = c.bind(Some("idle"));
    assert_eq!(b.attr("type"), Some("result"));
    c.send("<presence/>");
    c
}

fn run(n: usize, tls: bool) {
    let s = start(n, tls);
    // Warm up: one session, so that lazily initialised state (TLS config, redb pages) is in the baseline.
    let warm = login(&s, 0, tls);
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.child.id();
    let base = rss_kib(pid);
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(login(&s, i, tls));
    }
    let login_secs = t0.elapsed().as_secs_f64();
    // Round-trip on the last one so the server has processed every presence.
    let last = clients.last_mut().unwrap();
    let r = last.iq(
        "sync",
        "<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(r.attr("type"), Some("result"));
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    let per = (after.saturating_sub(base) as f64) * 1024.0 / n as f64;
    let mode = if tls { "starttls" } else { "plain" };
    println!(
        "| {mode:>8} | {n:>6} | {base:>9} | {after:>9} | {:>12.0} | {:>9.2} |",
        per, login_secs
    );
    println!(
        "{{\"bench\":\"idle\",\"server\":\"kinglet\",\"mode\":\"{mode}\",\"sessions\":{n},\"rss_start_kib\":{base},\"rss_after_kib\":{after},\"bytes_per_session\":{per:.0},\"login_secs\":{login_secs:.2}}}"
    );
    drop(clients);
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
    println!("| mode     | sessions | RSS start KiB | RSS after KiB | bytes/session | login s |");
    println!("|---|---|---|---|---|---|");
    if mode != "tls" {
        run(n, false);
    }
    if mode != "plain" {
        run(n, true);
    }
}
