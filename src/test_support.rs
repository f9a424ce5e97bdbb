//! Helpers shared by the unit tests of every module (compiled only for `cargo test`).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Config;
use crate::jid::Jid;
use crate::outbox::Outbox;
use crate::router::Router;
use crate::store::{CommitMode, Store};
use crate::system::SystemEnv;
use crate::xml::Element;

/// A fresh, empty directory below the system temp dir, removed again on drop. Its name
/// holds the tag, the process id and a per-process counter, so tests running in parallel
/// never share one; a leftover from a crashed run with the same pid is removed first.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("kinglet-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// A data directory below the temp dir that does not exist yet, so `Store::open` has
    /// to create it.
    pub(crate) fn data(&self) -> PathBuf {
        self.0.join("data")
    }
}

/// A `TempDir` stands for its path: `dir.join(..)`, `Store::open(&dir, ..)`.
impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A router over `store` in group-commit mode (as the daemon runs it), with the default
/// configuration but for `data_dir` (`dir`) and what `tweak` changes.
pub(crate) fn group_router(
    dir: &Path,
    store: &Rc<Store>,
    tweak: impl FnOnce(&mut Config),
) -> Router {
    store.pubsub_set_mode(CommitMode::Group);
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    tweak(&mut config);
    Router::new(Rc::new(config), store.clone(), Rc::new(SystemEnv::new())).expect("router")
}

/// The ids of every pub-sub item on disk in `store`, in load order.
pub(crate) fn stored_item_ids(store: &Store) -> Vec<String> {
    store
        .pubsub_load()
        .expect("load")
        .items
        .into_iter()
        .map(|(_, _, i, _)| i.id)
        .collect()
}

/// Binds `user/resource` on connection `conn` of router `r`; returns its JID and outbox.
pub(crate) fn bind(r: &mut Router, user: &str, resource: &str, conn: u64) -> (Jid, Rc<Outbox>) {
    let ob = Outbox::new(64, 1 << 20);
    let jid = r
        .bind(user, false, Some(resource), conn, ob.clone())
        .expect("bind");
    (jid, ob)
}

/// The stanzas queued in `ob` (and takes them out).
pub(crate) fn drained(ob: &Outbox) -> Vec<Element> {
    let mut v = Vec::new();
    ob.drain_into(&mut v);
    let text = String::from_utf8(v).expect("utf-8");
    let mut framer = crate::xml::Framer::new(crate::xml::XmlLimits::default());
    framer
        .push(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        .expect("header");
    framer.push(text.as_bytes()).expect("well-formed output");
    let mut out = Vec::new();
    while let Ok(Some(f)) = framer.next_frame() {
        if let crate::xml::Frame::Stanza(e) = f {
            out.push(e);
        }
    }
    out
}
