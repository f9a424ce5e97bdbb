//! The sans-IO boundary, enforced: the core modules (docs/architecture.md) must not import
//! the executor, sockets, TLS, the database, the file system, threads, the wall clock or
//! the OS random number generator. Time and randomness are passed in; the shell (`net`,
//! `daemon`, `signals`, `notify`, `logging`, `store`, `system`) does the IO.
//!
//! The check reads the core's source files (their non-test code: `tests.rs`, `*_tests.rs`,
//! `tests/`, `testing.rs` and a trailing `#[cfg(test)] mod … { … }` are skipped, as are
//! comments) and fails on any forbidden name. What the core still uses today is listed in
//! [`KNOWN_GAPS`], each entry with the step of the restructure that removes it; an entry
//! that no longer matches fails too, so the list can only shrink.
//!
//! The same reader enforces the one XML writer (docs/architecture.md, "Rules"): outside
//! `src/xml/`, non-test code writes no XML by hand (`format!("<…")`, `write!(s, "<…")`,
//! `push_str("<…")`, any string literal that starts like a tag); it uses `xml::Writer`.

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
    "src/component.rs",
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

/// The `.rs` files under `dir`, sorted, skipping directories named `tests`.
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

/// The core's non-test source files, relative to the crate root.
fn core_files() -> Vec<String> {
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
            name != "tests.rs" && !name.ends_with("_tests.rs") && name != "testing.rs"
        })
        .map(|p| relative(&root, &p))
        .collect()
}

/// `p` relative to `root`, as a string.
fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .expect("under the root")
        .to_string_lossy()
        .into_owned()
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

/// The code of `source` outside comments and `#[cfg(test)] mod … { … }` blocks:
/// (line number, the line up to a `//` comment).
fn code_lines(source: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut code = Vec::new();
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
        code.push((i + 1, line.split("//").next().unwrap_or("")));
    }
    code
}

/// The forbidden names `source` uses outside comments and `#[cfg(test)] mod … { … }`
/// blocks: (line number, name).
fn violations(source: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (line, code) in code_lines(source) {
        for (name, _) in FORBIDDEN {
            if uses(code, name) {
                found.push((line, *name));
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

/// Every non-test source file under `src/` except `src/xml/` (the writer itself),
/// relative to the crate root. Test code is `tests/` directories and the files of
/// `#[cfg(test)] mod name;` declarations (`name.rs` or `name/`), found from the sources.
fn non_xml_files() -> Vec<String> {
    let root = root();
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    let mut test_paths: Vec<PathBuf> = Vec::new();
    for f in &files {
        let source = std::fs::read_to_string(f).expect("read source");
        let lines: Vec<&str> = source.lines().map(str::trim).collect();
        // The directory a `mod name;` in `f` resolves in.
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let parent = f.parent().expect("parent");
        let dir = if ["mod", "lib", "main"].contains(&stem) {
            parent.to_path_buf()
        } else {
            parent.join(stem)
        };
        for (i, l) in lines.iter().enumerate() {
            if *l != "#[cfg(test)]" {
                continue;
            }
            let mut path_attr = None;
            for next in &lines[i + 1..] {
                if let Some(p) = next.strip_prefix("#[path = \"") {
                    path_attr = p.split('"').next();
                } else if next.starts_with("#[") {
                } else {
                    let decl = next
                        .trim_start_matches("pub(crate) ")
                        .trim_start_matches("pub(super) ")
                        .trim_start_matches("pub ");
                    if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';'))
                    {
                        match path_attr {
                            Some(p) => test_paths.push(parent.join(p)),
                            None => {
                                test_paths.push(dir.join(format!("{name}.rs")));
                                test_paths.push(dir.join(name));
                            }
                        }
                    }
                    break;
                }
            }
        }
    }
    let xml = root.join("src/xml");
    files
        .into_iter()
        .filter(|p| !p.starts_with(&xml))
        .filter(|p| !test_paths.iter().any(|t| p.starts_with(t)))
        .map(|p| relative(&root, &p))
        .collect()
}

/// Hand-written XML in `source`'s non-test code: (line number, the offending line). A
/// string literal (`"…"`, `b"…"`, `r"…"`, `r#"…"`) whose text starts like a tag or a
/// declaration (`<` then a letter, `/`, `?` or `!`) is XML written by hand; that covers
/// `format!("<…")`, `write!(s, "<…")`, `writeln!`, `push_str("<…")` and
/// `push_str(&format!("<…"))`, and multi-line calls whose string starts on the next line.
fn hand_written_xml(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (line, code) in code_lines(source) {
        let b = code.as_bytes();
        let hit = (0..b.len()).any(|i| {
            // `"` opening a literal: at the start, or after a non-identifier character
            // other than `\` (an escaped quote inside a literal) or a raw-string prefix.
            let prev = if i == 0 { b' ' } else { b[i - 1] };
            let open = b[i] == b'"'
                && (matches!(prev, b'b' | b'r' | b'#')
                    || !(prev.is_ascii_alphanumeric() || prev == b'\\'));
            open && b.get(i + 1) == Some(&b'<')
                && b.get(i + 2)
                    .is_some_and(|&c| c.is_ascii_alphabetic() || b"/?!".contains(&c))
        });
        if hit {
            found.push((line, code.trim().to_owned()));
        }
    }
    found
}

#[test]
fn xml_is_written_only_by_the_writer() {
    let mut errors = Vec::new();
    let files = non_xml_files();
    for must in [
        "src/session.rs",
        "src/component.rs",
        "src/pubsub/notify.rs",
        "src/client/conn.rs",
    ] {
        assert!(files.iter().any(|f| f == must), "{must} is not scanned");
    }
    for not in [
        "src/xml/writer.rs",
        "src/model_tests.rs",
        "src/pubsub/tests/mod.rs",
    ] {
        assert!(!files.iter().any(|f| f == not), "{not} is scanned");
    }
    for file in files {
        let source = std::fs::read_to_string(root().join(&file)).expect("read source");
        for (line, code) in hand_written_xml(&source) {
            errors.push(format!("{file}:{line}: {code}"));
        }
    }
    assert!(
        errors.is_empty(),
        "XML outside src/xml/ is written with xml::Writer (docs/architecture.md), not by hand:\n{}",
        errors.join("\n")
    );
}

#[test]
fn xml_check_flags_hand_written_xml() {
    let source = r##"fn reply(id: &str) -> String {
    let a = format!("<iq id='{id}'/>");
    let _ = write!(s, "<items node='{}'>", n);
    let _ = writeln!(s, "<x/>");
    s.push_str("</iq>");
    s.push_str(&format!("<pubsub xmlns='{NS}'>"));
    let c = format!(
        "<message to='{}'>",
        to
    );
    out.extend_from_slice(b"<proceed/>");
    let d = r#"<?xml version='1.0'?>"#;
    // format!("<in-a-comment/>") is fine
    let fine = format!("a < b, {x}<y");
    let lt = "<";
    let caps = s.push('<');
    let quoted = "say \"<hi>\"";
    w.start("iq").attr("id", id);
}
#[cfg(test)]
mod tests {
    const INPUT: &str = "<iq type='get'/>";
}
"##;
    let lines: Vec<usize> = hand_written_xml(source)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 8, 11, 12]);
}
