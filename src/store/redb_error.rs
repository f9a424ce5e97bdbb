//! The one mapping from redb's per-operation and open errors to [`StoreError`].

use std::io;
use std::path::PathBuf;

use super::StoreError;

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Io(e) => e.into(),
            redb::StorageError::Corrupted(what) => Self::Corrupt(what),
            // redb refuses all further I/O after one failed: only reopening recovers
            // (`Store::reopen`, which the daemon's committer runs by itself).
            redb::StorageError::PreviousIo => Self::Io(io::Error::other(
                "an earlier write failed and the database refuses further I/O",
            )),
            other => Self::Db(other.to_string()),
        }
    }
}

impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(e) => e.into(),
            // A table under one of our names with other types, or missing although the
            // schema version says it exists: the file is not (or no longer) ours.
            e @ (redb::TableError::TableTypeMismatch { .. }
            | redb::TableError::TableIsMultimap(_)
            | redb::TableError::TableIsNotMultimap(_)
            | redb::TableError::TypeDefinitionChanged { .. }
            | redb::TableError::TableDoesNotExist(_)) => Self::Corrupt(e.to_string()),
            other => Self::Db(other.to_string()),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(e) => e.into(),
            other => Self::Db(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(e) => e.into(),
            other => Self::Db(other.to_string()),
        }
    }
}

/// Maps an error from opening the database file; only here is the path known, which
/// `Locked` needs.
pub(super) fn from_open_error(e: redb::DatabaseError, path: PathBuf) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path),
        // redb's answer to a non-empty file that does not start with its magic number.
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == io::ErrorKind::InvalidData =>
        {
            StoreError::Corrupt(format!("{} is not a redb database file", path.display()))
        }
        redb::DatabaseError::Storage(e) => e.into(),
        redb::DatabaseError::UpgradeRequired(format) => StoreError::Corrupt(format!(
            "{} uses redb file format {format}, which this kinglet cannot read",
            path.display()
        )),
        other => StoreError::Db(other.to_string()),
    }
}
