//! `StoreError`: every way the store can fail, its operator-facing message and its exit
//! code. The mapping from redb's errors lives with the redb store (`store/redb_error.rs`).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit::{EX_DATAERR, EX_FAILURE as EX_REFUSED, EX_IOERR, EX_SOFTWARE, EX_TEMPFAIL};

/// A store failure. The `Display` text is written for the operator and says what to do.
#[derive(Debug)]
pub enum StoreError {
    /// Another process (normally the running broker) holds the database's lock.
    Locked(PathBuf),
    /// The file system failed (other than running out of space).
    Io(io::Error),
    /// The file is not a kinglet database, or a stored key or value is damaged. The string
    /// names the table, the key and what is wrong.
    Corrupt(String),
    /// The file was written by a newer kinglet with a schema this build does not know.
    SchemaTooNew {
        /// The schema version in the file.
        found: u32,
        /// The newest schema version this build understands.
        supported: u32,
    },
    /// The user to add exists already.
    AlreadyExists,
    /// The user to change or delete does not exist.
    NotFound,
    /// The disk holding the database is full (ENOSPC).
    Full,
    /// An unexpected error inside redb or the store; a bug rather than an operator problem.
    Db(String),
    /// An argument is outside what the store accepts (empty, too long, contains NUL). The
    /// string says which and why. Maps to a `not-acceptable` / `bad-request` reply or to a
    /// command-line error.
    Invalid(String),
    /// A per-user collection reached its bound (e.g. `MAX_ROSTER_ITEMS`).
    LimitReached {
        /// What is full, e.g. "roster items".
        what: &'static str,
        /// The bound.
        max: usize,
    },
}

impl StoreError {
    /// The process exit code for this error (sysexits.h), documented in
    /// `docs/storage.md`: `Locked` 75, `Io`/`Full` 74, `Corrupt`/`SchemaTooNew`/`Invalid`
    /// 65, `Db` 70, and 1 for refused requests (`AlreadyExists`, `NotFound`,
    /// `LimitReached`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Locked(_) => EX_TEMPFAIL,
            Self::Io(_) | Self::Full => EX_IOERR,
            Self::Corrupt(_) | Self::SchemaTooNew { .. } | Self::Invalid(_) => EX_DATAERR,
            Self::Db(_) => EX_SOFTWARE,
            Self::AlreadyExists | Self::NotFound | Self::LimitReached { .. } => EX_REFUSED,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Locked(path) => write!(
                f,
                "the database {} is locked by another process (is the kinglet broker \
                 running? stop it, e.g. `systemctl stop kinglet`, then retry)",
                path.display()
            ),
            Self::Io(e) => write!(
                f,
                "I/O error on the database: {e} (check the disk, the kernel log, and the \
                 ownership and permissions of the data directory; a running broker reopens \
                 the database by itself once the disk works again)"
            ),
            Self::Corrupt(what) => write!(
                f,
                "the database is damaged: {what} (restore the file from a backup, or move \
                 it away to start with an empty database)"
            ),
            Self::SchemaTooNew { found, supported } => write!(
                f,
                "the database has schema version {found}, but this kinglet understands only \
                 up to version {supported}; it was written by a newer kinglet (install that \
                 version again, or restore a backup taken before the upgrade)"
            ),
            Self::AlreadyExists => f.write_str(
                "the user already exists (use `kinglet user passwd` to change its password)",
            ),
            Self::NotFound => f.write_str("no such user (see `kinglet user list`)"),
            Self::Full => f.write_str(
                "the disk holding the database is full (free some space; a running broker \
                 recovers by itself, a command or a failed start can then be run again)",
            ),
            Self::Db(what) => write!(
                f,
                "internal database error: {what} (this is a bug in kinglet; please report it)"
            ),
            Self::Invalid(what) => write!(f, "rejected: {what}"),
            Self::LimitReached { what, max } => {
                write!(f, "too many {what}: the limit is {max}")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// True for "no space left on device" (ENOSPC). A full quota (EDQUOT) stays `Io`:
/// `ErrorKind::QuotaExceeded` is newer than our minimum Rust (1.85).
fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        if is_full(&e) { Self::Full } else { Self::Io(e) }
    }
}
