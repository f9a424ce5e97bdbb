//! Unit tests of `crate::config`: parsing, defaults, validation and the documented keys.

use super::*;

fn err(s: &str) -> ConfigError {
    match Config::from_toml_str(s, None) {
        Ok(c) => panic!("expected an error for {s:?}, got {c:?}"),
        Err(e) => e,
    }
}

fn err_key(s: &str) -> String {
    err(s).key.unwrap_or_default()
}

#[test]
fn defaults_match_design() {
    let c = Config::default();
    assert_eq!(c.domain, "localhost");
    assert_eq!(c.data_dir, PathBuf::from("./kinglet-data"));
    assert_eq!(c.log_level, "info");
    assert_eq!(c.c2s.listen, vec!["127.0.0.1:5222".parse().expect("addr")]);
    assert!(c.c2s.direct_tls_listen.is_empty());
    assert_eq!(c.c2s.allow_anonymous, AnonymousPolicy::Loopback);
    assert!(!c.c2s.allow_plaintext_public);
    assert_eq!(c.tls, None);
    assert_eq!(c.auth.scram_iterations, 10_000);
    assert!(c.auth.allow_plain);
    assert_eq!(c.store.cache_bytes, 4_194_304);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.pubsub_service(), "pubsub.localhost");
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(Config::load(None), Ok(Config::default()));
    assert_eq!(Config::from_toml_str("", None), Ok(Config::default()));
}

/// The example file of docs/configuration.md (kept in sync by `docs_example_matches`).
const EXAMPLE: &str = r#"
domain = "example.org"
data_dir = "/var/lib/kinglet"
log_level = "info,kinglet::net=debug"

[c2s]
listen = ["0.0.0.0:5222", "[::1]:5222"]
direct_tls_listen = ["0.0.0.0:5223"]
allow_anonymous = "never"
allow_plaintext_public = false

[tls]
cert = "/etc/kinglet/fullchain.pem"
key = "/etc/kinglet/privkey.pem"

[auth]
scram_iterations = 10000
allow_plain = true

[store]
cache_bytes = 4194304
max_bytes = 33554432
full_policy = "evict-oldest"

[limits]
max_stanza_bytes = 65536
max_xml_depth = 32
max_xml_attrs = 32
max_connections = 64
outbox_max_stanzas = 256
outbox_max_bytes = 262144
negotiation_timeout_secs = 30
idle_ping_secs = 240
idle_timeout_secs = 360
write_timeout_secs = 30
max_resources_per_account = 16
max_roster_items = 500
pubsub_max_nodes = 1024
pubsub_max_items_per_node = 1000
pubsub_max_item_bytes = 65536
pubsub_max_subscriptions_per_node = 1024

[pubsub]
service = "pubsub.example.org"
create_nodes = "local"
admins = ["admin@example.org"]
"#;

fn docs() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn full_example_parses() {
    let c = Config::from_toml_str(EXAMPLE, Some(Path::new("/etc/kinglet"))).expect("valid");
    assert_eq!(c.domain, "example.org");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/kinglet"));
    assert_eq!(c.c2s.listen.len(), 2);
    assert_eq!(c.c2s.allow_anonymous, AnonymousPolicy::Never);
    let tls = c.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, PathBuf::from("/etc/kinglet/fullchain.pem"));
    assert_eq!(c.limits.max_connections, 64);
    assert_eq!(c.pubsub_service(), "pubsub.example.org");
    assert_eq!(c.pubsub.create_nodes, CreatePolicy::Local);
    assert_eq!(c.pubsub.admins, vec!["admin@example.org".to_owned()]);
}

#[test]
fn pubsub_rules() {
    assert_eq!(
        err_key("[pubsub]\nservice = \"pubsub.elsewhere\"\n"),
        "pubsub.service"
    );
    assert_eq!(err_key("[pubsub]\nadmins = [\"x\"]\n"), "pubsub.admins");
    assert_eq!(
        err_key("[pubsub]\ncreate_nodes = \"nobody\"\n"),
        "pubsub.create_nodes"
    );
    let c = Config::from_toml_str("[pubsub]\nservice = \"ps.localhost\"\n", None).expect("valid");
    assert_eq!(c.pubsub_service(), "ps.localhost");
    // pep_force: values checked at startup; the default forces bookmarks to whitelist.
    assert_eq!(
        err_key("[pubsub.pep_force.\"urn:x\"]\naccess_model = \"nope\"\n"),
        "pubsub.pep_force"
    );
    assert_eq!(
        err_key("[pubsub.pep_force.\"urn:x\"]\nnode_type = \"collection\"\n"),
        "pubsub.pep_force"
    );
    assert_eq!(
        Config::default().pubsub.pep_force["storage:bookmarks"]["access_model"],
        "whitelist"
    );
    let c = Config::from_toml_str("[pubsub.pep_force.\"urn:x\"]\nmax_items = \"5\"\n", None)
        .expect("valid");
    assert_eq!(
        c.pubsub.pep_force.len(),
        1,
        "an operator table replaces the default"
    );
}

#[test]
fn docs_example_matches() {
    // The first ```toml block after "## Full example" in the docs is this example.
    let docs = docs();
    let section = docs
        .split("## Full example")
        .nth(1)
        .expect("docs have a '## Full example' section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let from_docs = Config::from_toml_str(block, None).expect("docs example is valid");
    let here = Config::from_toml_str(EXAMPLE, None).expect("valid");
    assert_eq!(from_docs, here);
}

/// Every `table.key` path of a rendered config.
fn key_paths(toml_text: &str) -> Vec<String> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in toml_text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = header_name(line) {
            table = name;
        } else if let Some(k) = line_key(line) {
            out.push(if table.is_empty() {
                k
            } else {
                format!("{table}.{k}")
            });
        }
    }
    out
}

#[test]
fn every_key_is_documented() {
    let docs = docs();
    let with_tls = Config {
        tls: Some(Tls::default()),
        ..Config::default()
    };
    let with_component = Config::from_toml_str(COMPONENT, None).expect("component file");
    let mut paths = key_paths(&Config::default().to_toml());
    paths.extend(key_paths(&with_tls.to_toml()));
    paths.extend(key_paths(&with_component.to_toml()));
    assert!(paths.len() >= 25, "{paths:?}");
    for p in paths {
        // The keys below `pubsub.pep_force` are node names and field names.
        let p = if p.starts_with("pubsub.pep_force.") {
            "pubsub.pep_force".to_owned()
        } else {
            p
        };
        assert!(
            docs.contains(&format!("`{p}`")),
            "docs/configuration.md does not mention `{p}`"
        );
    }
}

#[test]
fn to_toml_round_trips() {
    let default = Config::default();
    let text = default.to_toml();
    assert_eq!(Config::from_toml_str(&text, None), Ok(default));
    assert!(text.contains("# [tls] is not set"), "{text}");

    let example = Config::from_toml_str(EXAMPLE, Some(Path::new("/etc/kinglet"))).expect("valid");
    let text = example.to_toml();
    for key in [
        "max_roster_items",
        "allow_plain",
        "cache_bytes",
        "direct_tls_listen",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    assert_eq!(
        Config::from_toml_str(&text, Some(Path::new("/elsewhere"))),
        Ok(example)
    );
}

#[test]
fn unknown_keys_rejected_naming_them() {
    let e = err("domain = \"a.b\"\n[c2s]\nlisten = []\nlistne = []\n");
    assert_eq!(e.key.as_deref(), Some("c2s.listne"), "{e}");
    assert!(e.message.contains("listne"), "{e}");
    assert!(e.message.contains("line 4"), "{e}");

    assert_eq!(err_key("[limits]\nmax_stanzas = 3\n"), "limits.max_stanzas");
    assert_eq!(err_key("verbose = true\n"), "verbose");
    assert_eq!(err_key("[tsl]\ncert = \"x\"\n"), "tsl");
    assert_eq!(err_key("c2s.bogus = 1\n"), "c2s.bogus");
}

#[test]
fn type_errors_name_the_key() {
    assert_eq!(
        err_key("[limits]\nmax_stanza_bytes = \"big\"\n"),
        "limits.max_stanza_bytes"
    );
    assert_eq!(
        err_key("[c2s]\nallow_anonymous = \"sometimes\"\n"),
        "c2s.allow_anonymous"
    );
    assert_eq!(
        err_key("[c2s]\nlisten = [\n  \"127.0.0.1:5222\",\n  \"nonsense\",\n]\n"),
        "c2s.listen"
    );
    assert_eq!(
        err_key("[limits]\nmax_connections = -1\n"),
        "limits.max_connections"
    );
    let e = err("domain = \n");
    assert!(e.message.contains("line 1"), "{e}");
}

#[test]
fn domain_rules() {
    let c = Config::from_toml_str("domain = \"Example.ORG\"", None).expect("normalised");
    assert_eq!(c.domain, "example.org");
    for bad in [
        "",
        "user@example.org",
        "example.org/res",
        "exa mple.org",
        "example..org",
        ".example.org",
        "example.org.",
        "-a.org",
        "a-.org",
        "ex_ample.org",
        "bücher.de",
    ] {
        let e = err(&format!("domain = {bad:?}"));
        assert_eq!(e.key.as_deref(), Some("domain"), "{bad:?}: {e}");
    }
    let long = format!("{}.org", "a".repeat(64));
    assert_eq!(err_key(&format!("domain = {long:?}")), "domain");
    let long = ["abcdefghi"; 26].join("."); // 259 bytes, labels short
    assert_eq!(err_key(&format!("domain = {long:?}")), "domain");
    assert!(Config::from_toml_str("domain = \"xn--bcher-kva.de\"", None).is_ok());
    assert!(Config::from_toml_str("domain = \"10.0.0.1\"", None).is_ok());
    let upper = Config {
        domain: "Localhost".to_owned(),
        ..Config::default()
    };
    assert_eq!(
        upper.validate().map_err(|e| e.key),
        Err(Some("domain".to_owned()))
    );
}

#[test]
fn listener_rules() {
    assert_eq!(err_key("[c2s]\nlisten = []\n"), "c2s.listen");
    assert_eq!(
        err_key("[c2s]\nlisten = [\"127.0.0.1:5222\", \"127.0.0.1:5222\"]\n"),
        "c2s.listen"
    );
    let e = err(
        "[c2s]\nlisten = [\"127.0.0.1:5222\"]\ndirect_tls_listen = [\"127.0.0.1:5222\"]\n[tls]\n",
    );
    assert_eq!(e.key.as_deref(), Some("c2s.direct_tls_listen"));
    assert!(e.message.contains("twice"), "{e}");
    let e = err("[c2s]\nlisten = [\"0.0.0.0:5222\", \"127.0.0.1:5222\"]\n[tls]\n");
    assert!(e.message.contains("overlap"), "{e}");
    // Different ports and port 0 are fine.
    assert!(
            Config::from_toml_str(
                "[c2s]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\", \"127.0.0.2:5222\", \"[::1]:5222\"]\n",
                None
            )
            .is_ok()
        );
    let too_many: Vec<String> = (0..33)
        .map(|p| format!("\"127.0.0.1:{}\"", 6000 + p))
        .collect();
    assert_eq!(
        err_key(&format!("[c2s]\nlisten = [{}]\n", too_many.join(","))),
        "c2s.listen"
    );
}

#[test]
fn public_plaintext_needs_tls_or_opt_out() {
    let e = err("[c2s]\nlisten = [\"0.0.0.0:5222\"]\n");
    assert_eq!(e.key.as_deref(), Some("c2s.listen"));
    assert_eq!(
        e.message,
        "listening on 0.0.0.0:5222 without TLS exposes passwords; set [tls] cert/key or \
             c2s.allow_plaintext_public = true"
    );
    assert_eq!(err_key("[c2s]\nlisten = [\"[::]:5222\"]\n"), "c2s.listen");
    assert_eq!(
        err_key("[c2s]\nlisten = [\"192.168.1.1:5222\"]\n"),
        "c2s.listen"
    );
    assert!(Config::from_toml_str("[c2s]\nlisten = [\"0.0.0.0:5222\"]\n[tls]\n", None).is_ok());
    assert!(
        Config::from_toml_str(
            "[c2s]\nlisten = [\"0.0.0.0:5222\"]\nallow_plaintext_public = true\n",
            None
        )
        .is_ok()
    );
    assert!(
        Config::from_toml_str("[c2s]\nlisten = [\"[::1]:5222\", \"127.9.9.9:1\"]\n", None).is_ok()
    );
}

#[test]
fn direct_tls_needs_tls() {
    let s = "[c2s]\ndirect_tls_listen = [\"127.0.0.1:5223\"]\n";
    assert_eq!(err_key(s), "c2s.direct_tls_listen");
    let c = Config::from_toml_str(&format!("{s}[tls]\n"), None).expect("valid");
    assert_eq!(c.c2s.direct_tls_listen.len(), 1);
    // Direct TLS alone is enough of a listener.
    let only = "[c2s]\nlisten = []\ndirect_tls_listen = [\"0.0.0.0:5223\"]\n[tls]\n";
    assert!(Config::from_toml_str(only, None).is_ok());
}

#[test]
fn scram_iterations_range() {
    assert_eq!(
        err_key("[auth]\nscram_iterations = 4095\n"),
        "auth.scram_iterations"
    );
    assert_eq!(
        err_key("[auth]\nscram_iterations = 1000001\n"),
        "auth.scram_iterations"
    );
    assert!(Config::from_toml_str("[auth]\nscram_iterations = 4096\n", None).is_ok());
    assert!(Config::from_toml_str("[auth]\nscram_iterations = 1000000\n", None).is_ok());
}

#[test]
fn cache_bytes_range() {
    assert_eq!(err_key("[store]\ncache_bytes = 0\n"), "store.cache_bytes");
    assert_eq!(
        err_key("[store]\ncache_bytes = 1073741825\n"),
        "store.cache_bytes"
    );
    assert!(Config::from_toml_str("[store]\ncache_bytes = 65536\n", None).is_ok());
    assert_eq!(err_key("[store]\nmax_bytes = 100\n"), "store.max_bytes");
    assert_eq!(
        err_key("[store]\nfull_policy = \"panic\"\n"),
        "store.full_policy"
    );
    let c = Config::from_toml_str("[store]\nmax_bytes = 0\nfull_policy = \"reject\"\n", None)
        .expect("valid");
    assert_eq!(c.store.full_policy, FullPolicy::Reject);
    for (v, ms) in [
        ("0", 0),
        ("\"0\"", 0),
        ("5", 5000),
        ("\"5s\"", 5000),
        ("\"500ms\"", 500),
        ("\"1m\"", 60_000),
    ] {
        let c = Config::from_toml_str(&format!("[store]\nflush_interval = {v}\n"), None).expect(v);
        assert_eq!(
            c.store.flush_interval.duration(),
            Ok(Duration::from_millis(ms)),
            "{v}"
        );
    }
    for bad in ["\"5x\"", "\"soon\"", "\"1ms\"", "7200", "-1", "1.5"] {
        assert_eq!(
            err_key(&format!("[store]\nflush_interval = {bad}\n")),
            "store.flush_interval",
            "{bad}"
        );
    }
}

#[test]
fn log_level_rules() {
    for ok in [
        "error",
        "WARN",
        "info",
        "debug",
        "trace",
        "off",
        "info,kinglet::session=debug",
        "warn,kinglet=trace,rustls=off",
    ] {
        assert!(
            Config::from_toml_str(&format!("log_level = {ok:?}"), None).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "",
        "inf",
        "verbose",
        "info,",
        "kinglet=",
        "=debug",
        "kinglet=loud",
        "a b=info",
        "info, kinglet=debug",
        " info",
        "kinglet=debug=info",
    ] {
        assert_eq!(
            err_key(&format!("log_level = {bad:?}")),
            "log_level",
            "{bad:?}"
        );
    }
    let long = format!("log_level = \"{}\"", "info,".repeat(300));
    assert_eq!(err_key(&long), "log_level");
}

#[test]
fn limits_errors_surface_with_their_key() {
    let e = err("[limits]\nmax_stanza_bytes = 100\n");
    assert_eq!(e.key.as_deref(), Some("limits.max_stanza_bytes"));
    assert_eq!(
        err_key("[limits]\nidle_ping_secs = 400\n"),
        "limits.idle_ping_secs"
    );
}

#[test]
fn relative_paths_resolve_against_base_dir() {
    let s = "data_dir = \"data\"\n[tls]\ncert = \"certs/c.pem\"\nkey = \"/abs/k.pem\"\n";
    let c = Config::from_toml_str(s, Some(Path::new("/etc/kinglet"))).expect("valid");
    let tls = c.tls.expect("tls");
    assert_eq!(tls.cert, PathBuf::from("/etc/kinglet/certs/c.pem"));
    assert_eq!(tls.key, PathBuf::from("/abs/k.pem"));
    assert_eq!(c.data_dir, PathBuf::from("/etc/kinglet/data"));

    // Defaults of a present [tls] section live next to the file too.
    let c = Config::from_toml_str("[tls]\n", Some(Path::new("/etc/kinglet"))).expect("valid");
    assert_eq!(
        c.tls,
        Some(Tls {
            cert: PathBuf::from("/etc/kinglet/cert.pem"),
            key: PathBuf::from("/etc/kinglet/key.pem"),
        })
    );
    // The built-in data_dir stays relative to the working directory.
    assert_eq!(c.data_dir, PathBuf::from("./kinglet-data"));
    // Without a base directory nothing changes.
    let c = Config::from_toml_str(s, None).expect("valid");
    assert_eq!(c.data_dir, PathBuf::from("data"));
    assert_eq!(err_key("[tls]\ncert = \"\"\n"), "tls.cert");
    assert_eq!(err_key("data_dir = \"\"\n"), "data_dir");
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = crate::test_support::TempDir::new("config-load");
    let path = dir.join("kinglet.toml");
    std::fs::write(
        &path,
        "[tls]\ncert = \"c.pem\"\n[c2s]\nlisten = [\"0.0.0.0:5222\"]\n",
    )
    .expect("write");
    let c = Config::load(Some(&path)).expect("valid");
    assert_eq!(c.tls.expect("tls").cert, dir.join("c.pem"));

    std::fs::write(&path, "[c2s]\nlisten = [\"0.0.0.0:5222\"]\n").expect("write");
    let e = Config::load(Some(&path)).expect_err("no tls");
    assert_eq!(e.path.as_deref(), Some(path.as_path()));
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: c2s.listen: listening on", path.display())),
        "{shown}"
    );

    let big = "#".repeat(MAX_FILE_BYTES as usize + 1);
    std::fs::write(&path, big).expect("write");
    let e = Config::load(Some(&path)).expect_err("too big");
    assert!(e.message.contains("larger"), "{e}");

    std::fs::write(&path, [0xff, 0xfe, b'\n']).expect("write");
    assert!(Config::load(Some(&path)).is_err());

    let missing = dir.join("missing.toml");
    let e = Config::load(Some(&missing)).expect_err("missing");
    assert!(e.message.starts_with("cannot open"), "{e}");
    assert_eq!(e.key, None);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn loopback_detection() {
    for (a, lo) in [
        ("127.0.0.1:1", true),
        ("127.1.2.3:1", true),
        ("[::1]:1", true),
        ("[::ffff:127.0.0.1]:1", true),
        ("0.0.0.0:1", false),
        ("[::]:1", false),
        ("10.0.0.1:1", false),
    ] {
        let addr: SocketAddr = a.parse().expect("addr");
        assert_eq!(is_loopback(&addr), lo, "{a}");
    }
    let lo: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let far: SocketAddr = "10.0.0.1:9".parse().expect("addr");
    assert!(AnonymousPolicy::Loopback.allows(&lo));
    assert!(!AnonymousPolicy::Loopback.allows(&far));
    assert!(AnonymousPolicy::Always.allows(&far));
    assert!(!AnonymousPolicy::Never.allows(&lo));
}

#[test]
fn error_display_forms() {
    let e = ConfigError::new(Some("c2s.listen"), "bad");
    assert_eq!(e.to_string(), "c2s.listen: bad");
    let e = e.in_file(Path::new("/etc/k.toml"));
    assert_eq!(e.to_string(), "/etc/k.toml: c2s.listen: bad");
    assert_eq!(ConfigError::new(None, "x").to_string(), "x");
}

/// A component-mode file: `[c2s] listen = []` is accepted with `[component]`.
const COMPONENT: &str = "domain = \"kinglet.invalid\"\n[c2s]\nlisten = []\n\
    [pubsub]\ncreate_nodes = \"anyone\"\n\
    [component]\nserver = \"127.0.0.1:5347\"\njid = \"PubSub.Example.net\"\n\
    secret_file = \"component.secret\"\n";

#[test]
fn component_section_parses_and_moves_the_service() {
    let c = Config::from_toml_str(COMPONENT, Some(Path::new("/etc/kinglet"))).expect("valid");
    let comp = c.component.as_ref().expect("component");
    assert_eq!(comp.jid, "pubsub.example.net");
    assert_eq!(comp.server, "127.0.0.1:5347");
    assert_eq!(comp.reconnect_max_secs, 60);
    assert_eq!(
        comp.secret_file,
        PathBuf::from("/etc/kinglet/component.secret")
    );
    assert_eq!(c.pubsub_service(), "pubsub.example.net");
    assert!(c.c2s.listen.is_empty());
}

#[test]
fn component_errors_name_the_key() {
    let with = |from: &str, to: &str| {
        assert!(COMPONENT.contains(from), "{from}");
        COMPONENT.replace(from, to)
    };
    for (from, to, key) in [
        ("127.0.0.1:5347", "127.0.0.1", "component.server"),
        ("127.0.0.1:5347", "127.0.0.1:0", "component.server"),
        ("PubSub.Example.net", "not a domain", "component.jid"),
        // The component's JID may not be inside Kinglet's own domain.
        (
            "PubSub.Example.net",
            "pubsub.kinglet.invalid",
            "component.jid",
        ),
        (
            "create_nodes = \"anyone\"",
            "create_nodes = \"local\"",
            "pubsub.create_nodes",
        ),
        (
            "[pubsub]\n",
            "[pubsub]\nservice = \"x.kinglet.invalid\"\n",
            "pubsub.service",
        ),
        (
            "secret_file = \"component.secret\"\n",
            "secret_file = \"\"\n",
            "component.secret_file",
        ),
    ] {
        assert_eq!(err_key(&with(from, to)), key, "{from:?} -> {to:?}");
    }
    assert_eq!(
        err_key(&format!("{COMPONENT}reconnect_max_secs = 0\n")),
        "component.reconnect_max_secs"
    );
    assert_eq!(
        err_key(&format!("{COMPONENT}password = \"x\"\n")),
        "component.password"
    );
    // Without [component], no listener is still an error.
    assert_eq!(
        err_key("[c2s]\nlisten = []\n[pubsub]\ncreate_nodes = \"anyone\"\n"),
        "c2s.listen"
    );
}

/// The memory table has a row for the remembered remote presences in component mode only,
/// and it follows `limits.component_max_presences`.
#[test]
fn component_presences_are_in_the_memory_table_in_component_mode() {
    let key = "limits.component_max_presences";
    let plain = Config::default();
    assert!(plain.memory_budget().iter().all(|r| r.key != key));
    let mut c = Config::from_toml_str(COMPONENT, None).expect("component file");
    let row = |c: &Config| {
        c.memory_budget()
            .into_iter()
            .find(|r| r.key == key)
            .expect("a component presence row")
            .bytes
    };
    let at_default = row(&c);
    assert!(at_default > 0);
    c.limits.component_max_presences *= 2;
    assert_eq!(row(&c), 2 * at_default);
}
