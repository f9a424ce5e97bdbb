//! Issue 10, item 4: a full disk under a running broker. The data directory is a small
//! tmpfs; the test fills it, checks that reads and disco keep working and that writes get
//! a `wait` error, frees the space, checks that writes succeed again without a restart,
//! and after a restart that every acknowledged item is there.
//!
//! Needs `mount -t tmpfs` (root, or a user namespace that allows it): skipped, with a
//! line saying so, where mounting is not permitted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kinglet::xml::Element;

use super::client::{Client, condition};
use super::crash::{all_items, create, login, options, restart};
use super::{Daemon, TempDir};

const PS: &str = "http://jabber.org/protocol/pubsub";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Size of the tmpfs: the database (about 1.6 MiB after the first commits) and room to grow.
const TMPFS_SIZE: &str = "size=6m,mode=0700";

/// A tmpfs mounted over a directory, unmounted (lazily: the daemon may still hold the
/// file) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", TMPFS_SIZE, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) -> std::fs::File {
    let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
    let block = vec![0x5a_u8; 4096];
    for _ in 0..100_000 {
        if f.write_all(&block).is_err() {
            return f;
        }
    }
    panic!("the tmpfs did not fill up");
}

fn publish(c: &mut Client, id: &str, node: &str, item: &str, payload: &str) -> Element {
    c.iq(
        id,
        &format!(
            "<iq type='set' id='{id}' to='pubsub.localhost'><pubsub xmlns='{PS}'>\
             <publish node='{node}'><item id='{item}'><v xmlns='urn:crash'>{payload}</v></item>\
             </publish></pubsub></iq>"
        ),
    )
}

#[test]
fn disk_full_keeps_reads_and_recovers_when_space_returns() {
    let mut d = Daemon::start(options(""));
    let _ = d.child.kill();
    let _ = d.child.wait();
    // Move the data directory (accounts made by `kinglet user add`) onto a small tmpfs.
    let data = d.dir.0.join("data");
    let saved = TempDir::new("diskfull-copy");
    let db = data.join("kinglet.redb");
    std::fs::copy(&db, saved.0.join("kinglet.redb")).expect("copy");
    let _mount = match Tmpfs::mount(&data) {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "SKIPPED disk_full_keeps_reads_and_recovers_when_space_returns: cannot mount a tmpfs ({e})"
            );
            return;
        }
    };
    std::fs::copy(saved.0.join("kinglet.redb"), &db).expect("copy back");
    restart(&mut d, "stderr-full.log");

    let mut c = login(d.port, "p0");
    create(&mut c, "n");
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..5 {
        let payload = format!("before-{i}");
        let r = publish(&mut c, &format!("p{i}"), "n", &format!("i{i}"), &payload);
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        acked.insert(format!("i{i}"), payload);
    }

    // The disk fills up: some publish fails (redb may still find free pages at first).
    let filler = fill(&data);
    let big = "y".repeat(60_000);
    let mut failed = None;
    for i in 0..200 {
        let r = publish(&mut c, &format!("f{i}"), "n", &format!("f{i}"), &big);
        if r.attr("type") == Some("result") {
            acked.insert(format!("f{i}"), big.clone());
        } else {
            failed = Some(r);
            break;
        }
    }
    let failed = failed.expect("a publish fails on the full disk");
    assert_eq!(condition(&failed), "resource-constraint", "{failed:?}");
    let err = failed
        .child("error", "jabber:client")
        .expect("error element");
    assert_eq!(err.attr("type"), Some("wait"), "{failed:?}");

    // Reads and disco keep working while the disk is full.
    for round in 0..3 {
        let stored = all_items(&mut c, "n");
        for (id, payload) in &acked {
            assert_eq!(stored.get(id), Some(payload), "round {round}: item {id}");
        }
        let r = c.iq(
            "di",
            &format!("<iq type='get' id='di' to='localhost'><query xmlns='{DISCO_ITEMS}'/></iq>"),
        );
        let listed = r.child("query", DISCO_ITEMS).is_some_and(|q| {
            q.elements()
                .any(|i| i.attr("jid") == Some("pubsub.localhost"))
        });
        assert!(listed, "{r:?}");
        let r = c.iq(
            "dn",
            &format!("<iq type='get' id='dn' to='pubsub.localhost'><query xmlns='{DISCO_INFO}' node='n'/></iq>"),
        );
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        // Another write still gets the error, never remote-server-not-found.
        let r = publish(
            &mut c,
            &format!("w{round}"),
            "n",
            &format!("w{round}"),
            &big,
        );
        assert_eq!(r.attr("type"), Some("error"), "{r:?}");
        assert!(
            matches!(
                condition(&r).as_str(),
                "resource-constraint" | "internal-server-error"
            ),
            "{r:?}"
        );
    }
    let log = std::fs::read_to_string(d.dir.0.join("stderr-full.log")).unwrap_or_default();
    assert!(log.contains("storage fault"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // Space returns: writes succeed again without a restart.
    drop(filler);
    std::fs::remove_file(data.join("filler")).expect("free the space");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        let r = publish(&mut c, &format!("a{n}"), "n", &format!("a{n}"), "after");
        if r.attr("type") == Some("result") {
            acked.insert(format!("a{n}"), "after".into());
            break;
        }
        assert!(Instant::now() < deadline, "writes did not recover: {r:?}");
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(d.dir.0.join("stderr-full.log")).unwrap_or_default();
    assert!(log.contains("storage recovered"), "{log}");
    let r = publish(&mut c, "last", "n", "last", "last");
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    acked.insert("last".into(), "last".into());

    // After a restart, every acknowledged item is there.
    drop(c);
    restart(&mut d, "stderr-after.log");
    let mut c = login(d.port, "p0");
    let stored = all_items(&mut c, "n");
    for (id, payload) in &acked {
        assert_eq!(
            stored.get(id),
            Some(payload),
            "item {id} lost after restart"
        );
    }
    let _ = d.child.kill();
    let _ = d.child.wait();
}

/// Issue 10, item 8: a truncated database stops the daemon at start with exit code 65
/// and a message that names the file and says what to do; no panic (an abort, with
/// nothing an operator can act on, in release builds).
#[test]
fn truncated_database_stops_the_daemon_with_exit_65_and_advice() {
    let mut d = Daemon::start(options(""));
    let mut c = login(d.port, "p0");
    create(&mut c, "n");
    drop(c);
    let _ = d.child.kill();
    let _ = d.child.wait();
    let db = d.dir.0.join("data").join("kinglet.redb");
    let bytes = std::fs::read(&db).expect("read db");
    std::fs::write(&db, &bytes[..bytes.len() / 2]).expect("truncate");
    let (status, err) =
        super::run_to_exit(&d.config, "kinglet did not exit on a truncated database");
    assert_eq!(status.code(), Some(65), "{err}");
    assert!(
        err.contains("truncated") && err.contains("kinglet.redb"),
        "{err}"
    );
    assert!(err.contains("restore the file from a backup"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read(&db).expect("db").len(),
        bytes.len() / 2,
        "file changed"
    );
}
