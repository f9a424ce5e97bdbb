//! The sans-IO boundary, enforced: the core modules (docs/architecture.md) must not import
//! the executor, sockets, TLS, the database, the file system, threads, the wall clock or
//! the OS random number generator. Time and randomness are passed in; the shell (`net`,
//! `daemon`, `signals`, `notify`, `logging`, `store`, `system`) does the IO.
//!
//! The check reads the core's source files (their non-test code: `tests.rs`, `tests/`,
//! `testing.rs` and a trailing `#[cfg(test)] mod … { … }` are skipped, as are comments) and
//! fails on any forbidden name. What the core still uses today is listed in [`KNOWN_GAPS`],
//! each entry with the step of the restructure that removes it; an entry that no longer
//! matches fails too, so the list can only shrink.

use std::path::{Path, PathBuf};

/// The core: pure or sans-IO modules.
const CORE: &[&str] = &[
    "src/xml",
    "src/jid.rs",
    "src/env.rs",
    "src/storage",
    "src/stanza.rs",
    "src/sasl",
    "src/proto.rs",
    "src/caps.rs",
    "src/guard.rs",
    "src/outbox.rs",
    "src/session.rs",
    "src/router",
    "src/pubsub",
];

/// Names the core must not use, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("smol", "the executor and its channels belong to the shell"),
    ("async_io", "the reactor belongs to the shell"),
    ("async_net", "sockets belong to the shell"),
    ("rustls", "TLS belongs to the shell"),
    ("redb", "the database belongs to the store"),
    ("std::fs", "files belong to the shell"),
    ("std::thread", "threads belong to the shell"),
    ("TcpStream", "sockets belong to the shell"),
    ("TcpListener", "sockets belong to the shell"),
    ("UdpSocket", "sockets belong to the shell"),
    ("SystemTime::now", "the time is passed in"),
    ("Instant::now", "the time is passed in"),
    ("SystemRandom", "randomness is passed in"),
    ("OsRng", "randomness is passed in"),
    ("getrandom", "randomness is passed in"),
    (
        "crate::store",
        "storage is reached through effects, not the redb store",
    ),
    ("crate::net", "the core does not call the shell"),
    ("crate::daemon", "the core does not call the shell"),
    ("crate::signals", "the core does not call the shell"),
    ("crate::notify", "the core does not call the shell"),
];

/// What the core still uses today: (file, forbidden name, what removes it). Issue 11's
/// remaining steps empty this list.
const KNOWN_GAPS: &[(&str, &str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The core's non-test source files, relative to the crate root.
fn core_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests") {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    for c in CORE {
        let p = root.join(c);
        assert!(p.exists(), "{c} is listed in CORE but does not exist");
        if p.is_dir() {
            walk(&p, &mut files);
        } else {
            files.push(p);
        }
    }
    files
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name != "tests.rs" && name != "testing.rs"
        })
        .map(|p| {
            p.strip_prefix(&root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `line` uses `name` as a whole path segment sequence (not as part of a longer
/// identifier: `redb` matches `redb::Database` but not `credbox`).
fn uses(line: &str, name: &str) -> bool {
    let mut from = 0;
    while let Some(i) = line[from..].find(name) {
        let at = from + i;
        let before = line[..at].chars().next_back();
        let after = line[at + name.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return true;
        }
        from = at + name.len();
    }
    false
}

/// `{` minus `}` on a line, outside string and char literals (roughly: enough for the
/// brace structure of our own sources).
fn brace_delta(line: &str) -> i64 {
    let (mut delta, mut in_str, mut prev) = (0, false, ' ');
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '\'' if !in_str => {
                // A char literal such as '{' or '\'': skip to its closing quote.
                let rest: String = chars.clone().take(3).collect();
                if let Some(end) = rest.find('\'') {
                    for _ in 0..=end {
                        chars.next();
                    }
                }
            }
            '{' if !in_str => delta += 1,
            '}' if !in_str => delta -= 1,
            _ => {}
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    delta
}

/// The forbidden names `source` uses outside comments and `#[cfg(test)] mod … { … }`
/// blocks: (line number, name).
fn violations(source: &str) -> Vec<(usize, &'static str)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    let mut skip_depth: Option<i64> = None;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(depth) = skip_depth.as_mut() {
            *depth += brace_delta(line);
            if *depth <= 0 {
                skip_depth = None;
            }
            continue;
        }
        if t == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.trim_end().ends_with('{'))
        {
            skip_depth = Some(0);
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        for (name, _) in FORBIDDEN {
            if uses(code, name) {
                found.push((i + 1, *name));
            }
        }
    }
    found
}

#[test]
fn core_imports_no_io() {
    let mut errors = Vec::new();
    let mut gaps_seen = vec![false; KNOWN_GAPS.len()];
    for file in core_files() {
        let source = std::fs::read_to_string(root().join(&file)).expect("read source");
        for (line, name) in violations(&source) {
            match KNOWN_GAPS
                .iter()
                .position(|(f, n, _)| *f == file && *n == name)
            {
                Some(k) => gaps_seen[k] = true,
                None => {
                    let why = FORBIDDEN
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or("", |f| f.1);
                    errors.push(format!("{file}:{line}: uses `{name}` ({why})"));
                }
            }
        }
    }
    for (k, seen) in gaps_seen.iter().enumerate() {
        if !seen {
            let (f, n, _) = KNOWN_GAPS[k];
            errors.push(format!(
                "KNOWN_GAPS lists `{n}` in {f}, which no longer uses it: remove the entry"
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "the sans-IO core (docs/architecture.md) must not do IO:\n{}",
        errors.join("\n")
    );
}

#[test]
fn purity_check_flags_a_forbidden_import() {
    let source = "use crate::xml::Element;\n\
                  // smol in a comment is fine\n\
                  use redb::Database;\n\
                  fn f() -> u64 { let _ = std::time::SystemTime::now(); 0 }\n\
                  fn credbox() {}\n\
                  #[cfg(test)]\n\
                  mod tests {\n\
                      use smol::block_on;\n\
                      const OPEN: char = '{';\n\
                      fn g() { let _ = format!(\"{{}}\"); }\n\
                  }\n\
                  fn after_the_tests() { let _ = std::fs::read(\"x\"); }\n";
    assert_eq!(
        violations(source),
        [(3, "redb"), (4, "SystemTime::now"), (12, "std::fs")]
    );
}
