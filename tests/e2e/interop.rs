//! Interop with a client nobody here wrote: slixmpp (PyPI), driven by
//! `tests/interop/slixmpp_core.py`. `.ci/run` installs it in a venv and exports
//! `KINGLET_PYTHON`; without a usable Python + slixmpp this test fails (set
//! `KINGLET_SKIP_INTEROP=1` to skip it knowingly on a machine without PyPI access).

use std::process::Command;

use super::{Daemon, Options};

fn python() -> Option<String> {
    if std::env::var_os("KINGLET_SKIP_INTEROP").is_some() {
        return None;
    }
    let candidates = [
        std::env::var("KINGLET_PYTHON").ok(),
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/.cache/kinglet-venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        let ok = Command::new(&c)
            .args(["-c", "import slixmpp"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(c);
        }
    }
    panic!(
        "slixmpp interop needs Python with slixmpp: run .ci/run (it makes the venv) or set KINGLET_PYTHON; KINGLET_SKIP_INTEROP=1 skips"
    );
}

fn run_script(d: &Daemon, extra: &[&str]) -> (bool, String) {
    let Some(py) = python() else {
        return (true, "skipped".into());
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_core.py");
    let cert = d.cert.as_ref().unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(script)
        .args(["--host", "127.0.0.1", "--domain", "localhost"])
        .args([
            "--user1", "alice", "--pass1", "alice-pw", "--user2", "bob", "--pass2", "bob-pw",
        ])
        .arg("--cafile")
        .arg(cert)
        .args(extra);
    let out = cmd.output().expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn slixmpp_starttls_scram_sha256_message_ping_roster() {
    let d = Daemon::start(Options::default());
    let port = d.port.to_string();
    let (ok, text) = run_script(&d, &["--port", &port, "--mech", "SCRAM-SHA-256"]);
    eprintln!("{text}");
    assert!(
        ok,
        "slixmpp interop failed:\n{text}\n--- server log ---\n{}",
        d.log()
    );
    assert!(
        text.contains("passed, 0 failed") || text == "skipped",
        "{text}"
    );
}

#[test]
fn slixmpp_direct_tls_scram_sha1() {
    let d = Daemon::start(Options::default());
    let port = d.tls_port.unwrap().to_string();
    let (ok, text) = run_script(
        &d,
        &["--port", &port, "--mech", "SCRAM-SHA-1", "--direct-tls"],
    );
    assert!(
        ok,
        "slixmpp interop (direct TLS) failed:\n{text}\n--- server log ---\n{}",
        d.log()
    );
}
