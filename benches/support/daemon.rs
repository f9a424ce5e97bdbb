//! The kinglet daemon as the benchmarks start it: a temp dir with `data/`, a config file
//! (the caller's keys after `data_dir`), the release binary with `KINGLET_PRINT_PORTS`,
//! its c2s port read from stdout. Killed and its dir removed on drop. Shared by
//! benches/idle.rs and benches/pubsub.rs (`#[path]`-included; not a bench target itself).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running daemon.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh, empty temp dir for a bench run named `tag`.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kinglet-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Server {
    /// Starts the daemon in `dir` (from [`temp_dir`]) with `config` after the `data_dir`
    /// line; its stderr goes to `dir/stderr.log`.
    pub fn start_in(dir: PathBuf, config: &str) -> Server {
        let toml = format!("data_dir = \"{}\"\n{config}", data_dir(&dir).display());
        let cfg = dir.join("k.toml");
        std::fs::write(&cfg, toml).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kinglet"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("KINGLET_PRINT_PORTS", "1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).expect("log"),
            ))
            .spawn()
            .expect("spawn kinglet");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = loop {
            let l = lines.next().expect("daemon output").expect("line");
            if let Some(rest) = l.strip_prefix("LISTENING c2s ") {
                break rest
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        };
        // Keep reading stdout so that the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, port, dir }
    }
}

/// The store directory inside a bench dir.
pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}
