//! Exit statuses of every `kinglet` command, defined once: the sysexits(3) codes the daemon,
//! the admin commands and the `pub`/`sub` client use, plus the two plain ones.
//!
//! docs/operations.md and docs/configuration.md list which command exits with which.

/// The plain failure: a refused request (the user exists, does not exist, a limit is
/// reached) or an XMPP error reply, as `grep`/`useradd`-style tools use for "did not do it".
pub const EX_FAILURE: i32 = 1;
/// Bad command line (`EX_USAGE`).
pub const EX_USAGE: i32 = 64;
/// The input data (a file, an argument, stored state) was incorrect (`EX_DATAERR`).
pub const EX_DATAERR: i32 = 65;
/// An input file or the database does not exist or cannot be read (`EX_NOINPUT`).
pub const EX_NOINPUT: i32 = 66;
/// A service (the server) is unavailable (`EX_UNAVAILABLE`).
pub const EX_UNAVAILABLE: i32 = 69;
/// An internal software error (`EX_SOFTWARE`).
pub const EX_SOFTWARE: i32 = 70;
/// An operating system error: a socket cannot be bound, a signal handler set (`EX_OSERR`).
pub const EX_OSERR: i32 = 71;
/// An error while doing I/O on a file or on the output (`EX_IOERR`).
pub const EX_IOERR: i32 = 74;
/// A temporary failure; retrying later may work (`EX_TEMPFAIL`).
pub const EX_TEMPFAIL: i32 = 75;
/// The peer broke the protocol (`EX_PROTOCOL`).
pub const EX_PROTOCOL: i32 = 76;
/// Permission denied: authentication failed (`EX_NOPERM`).
pub const EX_NOPERM: i32 = 77;
/// An unusable configuration (`EX_CONFIG`).
pub const EX_CONFIG: i32 = 78;
/// Ended by SIGINT (Ctrl-C): 128 + 2, as shells report it.
pub const EX_INTERRUPTED: i32 = 130;
