//! `kinglet user add|del|list|passwd`: account management on the store file.
//!
//! These commands open the database directly. redb takes an exclusive lock on the file, so
//! while the broker runs they fail at once with exit code 75 (EX_TEMPFAIL) and a message
//! saying so; nothing is changed. Stop the broker, run the command, start it again.
//! Only SCRAM credentials (salted, iterated hashes for SHA-1 and SHA-256) are stored.
//!
//! Only `user add` creates the database (and the data directory). The other commands need
//! an existing one: without it they say where they looked and exit 66 (EX_NOINPUT), rather
//! than leave an empty `./kinglet-data` behind when run in the wrong directory or without
//! the broker's `--config`.

use std::path::Path;

use crate::cli::{UserAction, read_password};
use crate::config::Config;
use crate::jid::Jid;
use crate::sasl::StoredCredentials;
use crate::store::{DB_FILE_NAME, Store, StoreError};

/// Exit status when a read-only `user` command finds no database (`EX_NOINPUT`).
pub use crate::exit::EX_NOINPUT;

/// Turn `alice` or `alice@domain` into the username, checking the domain.
fn username(jid: &str, config: &Config) -> Result<String, String> {
    let full = if jid.contains('@') {
        jid.to_owned()
    } else {
        format!("{jid}@{}", config.domain)
    };
    let j = Jid::parse(&full).map_err(|e| format!("invalid JID {jid:?}: {e}"))?;
    if j.domain() != config.domain {
        return Err(format!(
            "{jid} is not on this server's domain {:?} (set `domain` in the config)",
            config.domain
        ));
    }
    if j.resource().is_some() {
        return Err(format!("{jid}: give a bare JID, without a resource"));
    }
    match j.local() {
        Some(l) if !l.starts_with("anon-") => Ok(l.to_owned()),
        Some(_) => Err("names starting with \"anon-\" are reserved for anonymous sessions".into()),
        None => Err(format!(
            "{jid}: a user JID needs a local part (user@domain)"
        )),
    }
}

fn open(config: &Config) -> Result<Store, StoreError> {
    Store::open(&config.data_dir, config.store.cache_bytes)
}

/// For the commands that must not create the database (`del`, `list`, `passwd`): fails
/// with [`Failure::NoDatabase`] when there is no database file under `data_dir`.
/// (`Store::open` would create it, and the data directory.) An existence check that
/// itself fails (permissions) is left to `Store::open` to report.
fn require_database(config: &Config, config_path: Option<&Path>) -> Result<(), Failure> {
    let path = config.data_dir.join(DB_FILE_NAME);
    if path.try_exists().is_ok_and(|exists| !exists) {
        let origin = match config_path {
            Some(p) => format!("data_dir from {}", p.display()),
            None => "data_dir is the built-in default; no --config given".to_owned(),
        };
        return Err(Failure::NoDatabase(format!(
            "no database at {} ({origin}); create one with `kinglet user add` or point \
             --config at the broker's configuration",
            path.display()
        )));
    }
    Ok(())
}

/// Run a `user` subcommand; returns the process exit code.
pub fn user_main(action: &UserAction) -> i32 {
    let config_path = match action {
        UserAction::Add(a) => a.config.as_deref(),
        UserAction::Del(a) => a.config.as_deref(),
        UserAction::List(a) => a.config.as_deref(),
        UserAction::Passwd(a) => a.config.as_deref(),
    };
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kinglet: invalid configuration: {e}");
            return crate::exit::EX_CONFIG;
        }
    };
    match run(action, &config, config_path) {
        Ok(msg) if msg.is_empty() => 0,
        // The change is made; a reader that went away only misses the confirmation.
        Ok(msg) => crate::cli::print_stdout(&format!("{msg}\n"), 0),
        Err(Failure::Usage(m)) => {
            eprintln!("kinglet: {m}");
            crate::exit::EX_USAGE
        }
        Err(Failure::NoDatabase(m)) => {
            eprintln!("kinglet: {m}");
            EX_NOINPUT
        }
        Err(Failure::Store(e)) => {
            eprintln!("kinglet: {e}");
            e.exit_code()
        }
    }
}

enum Failure {
    Usage(String),
    /// No database file where the configuration says (message for the user).
    NoDatabase(String),
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

fn password(pw: Option<&str>, file: Option<&Path>) -> Result<String, Failure> {
    read_password(pw, file).map_err(Failure::Usage)
}

/// The password (argument or file) as stored SCRAM credentials, with the configured
/// iteration count.
fn credentials(pw: Option<&str>, file: Option<&Path>, config: &Config) -> Result<Vec<u8>, Failure> {
    let pw = password(pw, file)?;
    let iterations = config.auth.scram_iterations;
    Ok(StoredCredentials::derive(&crate::system::SystemEnv::new(), &pw, iterations).to_bytes())
}

/// The reply to a `user add|passwd|del` whose store call returned `r`: `"{done} user@domain"`,
/// or a usage error for an account that already exists (add) or does not (passwd, del).
fn user_outcome(
    r: Result<(), StoreError>,
    done: &str,
    user: &str,
    config: &Config,
) -> Result<String, Failure> {
    match r {
        Ok(()) => Ok(format!("{done} {user}@{}", config.domain)),
        Err(StoreError::AlreadyExists) => Err(Failure::Usage(format!(
            "{user}@{} already exists (use `kinglet user passwd` to change the password)",
            config.domain
        ))),
        Err(StoreError::NotFound) => Err(Failure::Usage(format!(
            "no such user {user}@{}",
            config.domain
        ))),
        Err(e) => Err(e.into()),
    }
}

fn run(
    action: &UserAction,
    config: &Config,
    config_path: Option<&Path>,
) -> Result<String, Failure> {
    match action {
        UserAction::Add(a) => {
            let user = username(&a.jid, config).map_err(Failure::Usage)?;
            let creds = credentials(a.password.as_deref(), a.password_file.as_deref(), config)?;
            let store = open(config)?;
            user_outcome(store.user_add(&user, &creds), "added", &user, config)
        }
        UserAction::Passwd(a) => {
            let user = username(&a.jid, config).map_err(Failure::Usage)?;
            require_database(config, config_path)?;
            let creds = credentials(a.password.as_deref(), a.password_file.as_deref(), config)?;
            let store = open(config)?;
            user_outcome(
                store.user_set_credentials(&user, &creds),
                "password changed for",
                &user,
                config,
            )
        }
        UserAction::Del(a) => {
            let user = username(&a.jid, config).map_err(Failure::Usage)?;
            require_database(config, config_path)?;
            let store = open(config)?;
            user_outcome(store.user_del(&user), "deleted", &user, config)
        }
        UserAction::List(_) => {
            require_database(config, config_path)?;
            let store = open(config)?;
            let users = store.user_list()?;
            Ok(users
                .iter()
                .map(|u| format!("{u}@{}", config.domain))
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}
