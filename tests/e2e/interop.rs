//! Interop with a client nobody here wrote: slixmpp (PyPI), driven by
//! `tests/interop/slixmpp_core.py` (and aioxmpp for XEP-0198, `interop_sm.rs`). `.ci/run`
//! installs them in a venv and exports `KINGLET_PYTHON`; without a usable Python with both
//! this test fails (set `KINGLET_SKIP_INTEROP=1` to skip it knowingly on a machine without
//! PyPI access).

use std::process::Command;
use std::sync::Mutex;

use super::{Daemon, Options};

/// Python with slixmpp and aioxmpp: `KINGLET_PYTHON`, else the venv `.ci/run` makes
/// (`~/.cache/kinglet-venv`), else that venv is created (or completed) here from
/// `tests/interop/requirements.txt` (needs `python3` with venv and PyPI access), so that
/// `cargo test --release` works on a fresh machine too. Serialised: tests run in parallel.
pub fn python() -> Option<String> {
    static PY: Mutex<Option<String>> = Mutex::new(None);
    if std::env::var_os("KINGLET_SKIP_INTEROP").is_some() {
        return None;
    }
    let mut cached = PY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cached.as_ref() {
        return Some(p.clone());
    }
    let has_clients = |py: &str| {
        Command::new(py)
            .args(["-c", "import slixmpp, aioxmpp"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let venv = std::env::var("KINGLET_VENV").ok().unwrap_or_else(|| {
        format!(
            "{}/.cache/kinglet-venv",
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())
        )
    });
    let venv_py = format!("{venv}/bin/python");
    for c in [std::env::var("KINGLET_PYTHON").ok(), Some(venv_py.clone())]
        .into_iter()
        .flatten()
    {
        if has_clients(&c) {
            *cached = Some(c.clone());
            return Some(c);
        }
    }
    eprintln!("interop: installing tests/interop/requirements.txt into {venv} (one-off)");
    let req = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/requirements.txt"
    );
    let made = Command::new("python3")
        .args(["-m", "venv", &venv])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new(&venv_py)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                req,
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if made && has_clients(&venv_py) {
        *cached = Some(venv_py.clone());
        return Some(venv_py);
    }
    panic!(
        "slixmpp/aioxmpp interop needs Python 3 with venv and PyPI access (or KINGLET_PYTHON pointing at a python with tests/interop/requirements.txt installed); KINGLET_SKIP_INTEROP=1 skips knowingly"
    );
}

/// Runs the script `tests/interop/<script>` against `d` on `port` as alice and bob
/// (trusting the daemon's certificate), with `extra` arguments, and prints its output.
/// Returns whether it exited 0 and its stdout and stderr; `None` with
/// `KINGLET_SKIP_INTEROP`.
pub fn run_script(script: &str, d: &Daemon, port: u16, extra: &[&str]) -> Option<(bool, String)> {
    let py = python()?;
    let script = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(py)
        .arg(script)
        .args(["--host", "127.0.0.1", "--domain", "localhost"])
        .args(["--port", &port.to_string()])
        .args([
            "--user1", "alice", "--pass1", "alice-pw", "--user2", "bob", "--pass2", "bob-pw",
        ])
        .arg("--cafile")
        .arg(d.cert.as_ref().expect("cert"))
        .args(extra)
        .output()
        .expect("run python");
    Some((out.status.success(), transcript(&out)))
}

/// A script's stdout then stderr, as one text, also shown on the test's stderr.
pub fn transcript(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    text
}

/// Runs the slixmpp script `tests/interop/<script>` ([`run_script`]). Asserts that it
/// succeeded (`what` failed otherwise, with the daemon's log) and, with `all_passed`, that
/// it reports "passed, 0 failed". Does nothing with `KINGLET_SKIP_INTEROP`.
pub fn run_slixmpp(
    what: &str,
    script: &str,
    d: &Daemon,
    port: u16,
    extra: &[&str],
    all_passed: bool,
) {
    let Some((success, text)) = run_script(script, d, port, extra) else {
        return;
    };
    assert!(
        success && (!all_passed || text.contains("passed, 0 failed")),
        "{what} failed:\n{text}\n--- server log ---\n{}",
        d.log()
    );
}

#[test]
fn slixmpp_starttls_scram_sha256_message_ping_roster() {
    let d = Daemon::start(Options::default());
    let mech = ["--mech", "SCRAM-SHA-256"];
    run_slixmpp(
        "slixmpp interop",
        "slixmpp_core.py",
        &d,
        d.port,
        &mech,
        true,
    );
}

#[test]
fn slixmpp_direct_tls_scram_sha1() {
    let d = Daemon::start(Options::default());
    let port = d.tls_port.unwrap();
    let args = ["--mech", "SCRAM-SHA-1", "--direct-tls"];
    run_slixmpp(
        "slixmpp interop (direct TLS)",
        "slixmpp_core.py",
        &d,
        port,
        &args,
        false,
    );
}
