//! Test-only storage: a redb backend over shared bytes that can lose power, be killed, or
//! fail with a full disk, for the model test (`src/model_tests.rs`).
//!
//! [`CrashDisk`] keeps two images of the file: `current`, what the process sees (and what
//! survives a kill -9: the kernel's page cache outlives the process), and `durable`, what
//! was there at the last `sync_data` (what survives a power cut for sure). The writes
//! since the last sync are kept in order; a power cut ([`CrashDisk::crash`] with `torn`)
//! keeps a random subset of their 4 KiB chunks on top of `durable`, in order (a later write
//! to the same chunk may or may not reach the disk after an earlier one): torn writes, which
//! redb must survive since it relies only on the order of its fsyncs and on its checksums.
//!
//! `set_len` is durable at once, in both images: a file system that journals the size
//! before the data. (If a grown size could be lost while the header that describes the
//! grown file survives, redb 2.6 asserts at open; that is a file-system question this
//! model does not ask.)
//!
//! Faults: [`CrashDisk::fail_from`] makes the `n`th next write, sync or resize fail, and
//! every one after it, until [`CrashDisk::crash`] or [`CrashDisk::heal`]: with ENOSPC (a
//! disk that fills up; or only the syncs) or EIO (the power is going; the test then calls
//! `crash`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::Database;

use super::{Store, StoreError, redb_error, schema};

/// Granularity of torn writes: the page size of the page cache.
const CHUNK: usize = 4096;

/// How the operations of a [`CrashDisk`] fail once a fault is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `ENOSPC`: the disk is full.
    Full,
    /// `EIO`: the device is gone (the power is cut or the process killed next).
    Dead,
    /// `ENOSPC` from `sync_data` only (writes succeed and are not counted): the data may
    /// well have reached the disk, but the commit is reported as failed.
    FullOnSync,
}

#[derive(Default)]
struct State {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Writes since the last sync: `(offset, bytes)`, oldest first.
    unsynced: Vec<(usize, Vec<u8>)>,
    /// Operations (write, sync, set_len) until the armed fault, and the fault.
    fault: Option<(u64, Fault)>,
    /// Operations that failed since the fault was armed.
    failed: u64,
}

impl State {
    /// Counts one operation: `Err` if the armed fault is due.
    fn op(&mut self, sync: bool) -> std::io::Result<()> {
        let Some((left, kind)) = self.fault.as_mut() else {
            return Ok(());
        };
        if *kind == Fault::FullOnSync && !sync {
            return Ok(());
        }
        if *left > 0 {
            *left -= 1;
            return Ok(());
        }
        self.failed += 1;
        Err(match kind {
            Fault::Full | Fault::FullOnSync => std::io::Error::from_raw_os_error(28), // ENOSPC
            Fault::Dead => std::io::Error::from_raw_os_error(5),                      // EIO
        })
    }
}

/// A disk that can crash; cheap to clone (shared state).
#[derive(Clone, Default)]
pub(crate) struct CrashDisk(Arc<Mutex<State>>);

impl CrashDisk {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held ends the test anyway.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arms a fault: the `after` next operations succeed, then every one fails.
    pub(crate) fn fail_from(&self, after: u64, kind: Fault) {
        let mut s = self.state();
        s.fault = Some((after, kind));
        s.failed = 0;
    }

    /// Disarms the fault (space came back). Returns how many operations failed.
    pub(crate) fn heal(&self) -> u64 {
        let mut s = self.state();
        s.fault = None;
        std::mem::take(&mut s.failed)
    }

    /// Bytes written since the last sync.
    pub(crate) fn unsynced_bytes(&self) -> usize {
        self.state().unsynced.iter().map(|(_, b)| b.len()).sum()
    }

    /// The process dies (`torn == None`: kill -9, every completed write survives) or the
    /// power is cut (`torn`: a random subset of the unsynced chunks survives, drawn from
    /// `torn`). Returns a fresh disk holding what survived; this one must not be used
    /// again (the dead process's database still points at it).
    pub(crate) fn crash(&self, torn: Option<&mut fastrand::Rng>) -> CrashDisk {
        let s = self.state();
        let image = match torn {
            None => s.current.clone(),
            Some(rng) => {
                let mut image = s.durable.clone();
                image.resize(s.current.len(), 0);
                for (offset, bytes) in &s.unsynced {
                    for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
                        let at = offset + i * CHUNK;
                        if rng.bool() && at < image.len() {
                            let end = (at + chunk.len()).min(image.len());
                            image[at..end].copy_from_slice(&chunk[..end - at]);
                        }
                    }
                }
                image
            }
        };
        CrashDisk(Arc::new(Mutex::new(State {
            durable: image.clone(),
            current: image,
            ..State::default()
        })))
    }

    /// Current size of the file.
    pub(crate) fn len(&self) -> usize {
        self.state().current.len()
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "out of range")
}

/// The redb side of a [`CrashDisk`].
struct Backend(CrashDisk);

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashDisk")
    }
}

impl redb::StorageBackend for Backend {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.state().current.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let s = self.0.state();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(len).ok_or_else(out_of_range)?;
        s.current
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(out_of_range)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut s = self.0.state();
        s.op(false)?;
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        s.current.resize(len, 0);
        s.durable.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
        let mut s = self.0.state();
        s.op(true)?;
        let s = &mut *s;
        s.durable.clone_from(&s.current);
        s.unsynced.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut s = self.0.state();
        s.op(false)?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(data.len()).ok_or_else(out_of_range)?;
        s.current
            .get_mut(start..end)
            .ok_or_else(out_of_range)?
            .copy_from_slice(data);
        s.unsynced.push((start, data.to_vec()));
        Ok(())
    }
}

impl Store {
    /// Opens (creating or repairing) the database on `disk`, with a redb page cache of
    /// `cache_bytes`, like [`Store::open`] does with a file; [`Store::reopen_begin`]
    /// opens it again on the same disk (what the process sees: its page cache).
    pub(crate) fn open_on(disk: &CrashDisk, cache_bytes: usize) -> Result<Store, StoreError> {
        let path = PathBuf::from(":crash-disk:");
        let (d, p) = (disk.clone(), path.clone());
        let opener: super::Opener = Arc::new(move || {
            let db = Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(Backend(d.clone()))
                .map_err(|e| redb_error::from_open_error(e, p.clone()))?;
            schema::check_and_migrate(&db)?;
            Ok(db)
        });
        let db = opener()?;
        Ok(Store::from_db(db, path, Some(opener)))
    }
}
