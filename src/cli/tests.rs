//! Unit tests of the `kinglet` command line (`crate::cli`).

use super::*;
use crate::test_support::TempDir;

fn parse(args: &[&str]) -> Result<Args, String> {
    Args::from_args(&["kinglet"], args).map_err(|e| e.output)
}

fn ok(args: &[&str]) -> Args {
    match parse(args) {
        Ok(a) => a,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

#[test]
fn bare_and_version() {
    assert_eq!(
        ok(&[]),
        Args {
            command: None,
            version: false
        }
    );
    assert!(ok(&["--version"]).version);
    assert_eq!(ok(&[]).config_path(), None);
    assert!(version_line().starts_with("kinglet "));
}

#[test]
fn run_and_check_config() {
    assert_eq!(
        ok(&["run"]).command,
        Some(Command::Run(RunArgs { config: None }))
    );
    let a = ok(&["run", "--config", "/etc/kinglet/kinglet.toml"]);
    assert_eq!(
        a.config_path(),
        Some(Path::new("/etc/kinglet/kinglet.toml"))
    );
    let a = ok(&["run", "-c", "k.toml"]);
    assert_eq!(a.config_path(), Some(Path::new("k.toml")));
    assert_eq!(
        ok(&["check-config", "--config", "x.toml"]).command,
        Some(Command::CheckConfig(CheckConfigArgs {
            config: Some(PathBuf::from("x.toml"))
        }))
    );
    assert_eq!(
        ok(&["check-config"]).command,
        Some(Command::CheckConfig(CheckConfigArgs { config: None }))
    );
}

#[test]
fn user_commands() {
    let a = ok(&["user", "add", "alice@localhost", "--password", "pw"]);
    assert_eq!(
        a.command,
        Some(Command::User(UserArgs {
            action: UserAction::Add(UserAddArgs {
                jid: "alice@localhost".to_owned(),
                password: Some("pw".to_owned()),
                password_file: None,
                config: None,
            })
        }))
    );
    let a = ok(&[
        "user",
        "add",
        "bob",
        "--password-file",
        "/run/pw",
        "--config",
        "k.toml",
    ]);
    assert_eq!(
        a.command,
        Some(Command::User(UserArgs {
            action: UserAction::Add(UserAddArgs {
                jid: "bob".to_owned(),
                password: None,
                password_file: Some(PathBuf::from("/run/pw")),
                config: Some(PathBuf::from("k.toml")),
            })
        }))
    );
    assert_eq!(a.config_path(), Some(Path::new("k.toml")));
    assert_eq!(
        ok(&["user", "del", "bob@localhost", "-c", "k.toml"]).command,
        Some(Command::User(UserArgs {
            action: UserAction::Del(UserDelArgs {
                jid: "bob@localhost".to_owned(),
                config: Some(PathBuf::from("k.toml")),
            })
        }))
    );
    assert_eq!(
        ok(&["user", "list"]).command,
        Some(Command::User(UserArgs {
            action: UserAction::List(UserListArgs { config: None })
        }))
    );
    assert_eq!(
        ok(&["user", "passwd", "carol", "--password-file", "f"]).command,
        Some(Command::User(UserArgs {
            action: UserAction::Passwd(UserPasswdArgs {
                jid: "carol".to_owned(),
                password: None,
                password_file: Some(PathBuf::from("f")),
                config: None,
            })
        }))
    );
}

#[test]
fn client_commands() {
    let a = ok(&[
        "pub",
        "--node",
        "temp",
        "--json",
        "--create",
        "--config",
        "max_items=5",
        "--config",
        "title=T",
        "--server",
        "h:1",
        "--jid",
        "a@h",
        "--password-file",
        "pw",
        "--tls",
        "direct",
        "--ca-file",
        "ca.pem",
        "--timeout",
        "3",
        "{}",
    ]);
    let Some(Command::Pub(p)) = &a.command else {
        panic!("{a:?}")
    };
    assert_eq!(p.node, "temp");
    assert!(p.json && p.create && !p.lines);
    assert_eq!(p.config, ["max_items=5", "title=T"]);
    assert_eq!(p.payload.as_deref(), Some("{}"));
    assert_eq!(
        a.config_path(),
        None,
        "pub's --config is node configuration"
    );
    let c = p.connect_args();
    assert_eq!(c.server.as_deref(), Some("h:1"));
    assert_eq!(c.jid.as_deref(), Some("a@h"));
    assert_eq!(c.password_file, Some(PathBuf::from("pw")));
    assert_eq!(c.tls.as_deref(), Some("direct"));
    assert_eq!(c.ca_file, Some(PathBuf::from("ca.pem")));
    assert_eq!(c.timeout, Some(3));
    assert!(!c.insecure);

    let a = ok(&[
        "sub",
        "--node",
        "n",
        "--last",
        "3",
        "--format",
        "json",
        "--count",
        "2",
        "-v",
        "--insecure",
    ]);
    let Some(Command::Sub(s)) = &a.command else {
        panic!("{a:?}")
    };
    assert_eq!((s.last, s.count, s.verbose), (Some(3), Some(2), true));
    assert_eq!(s.format.as_deref(), Some("json"));
    assert!(s.connect_args().insecure);

    assert!(matches!(ok(&["nodes"]).command, Some(Command::Nodes(_))));
    let a = ok(&["items", "n", "--max", "4"]);
    assert!(matches!(&a.command, Some(Command::Items(i)) if i.node == "n" && i.max == Some(4)));
    let a = ok(&["node", "config", "n", "max_items=1", "title=x"]);
    assert!(matches!(&a.command, Some(Command::Node(NodeArgs {
        action: NodeAction::Config(c)
    })) if c.node == "n" && c.settings == ["max_items=1", "title=x"]));
    let a = ok(&["node", "create", "n", "--config", "a=b"]);
    assert!(matches!(&a.command, Some(Command::Node(NodeArgs {
        action: NodeAction::Create(c)
    })) if c.config == ["a=b"]));
    assert!(matches!(
        ok(&["node", "delete", "n"]).command,
        Some(Command::Node(NodeArgs {
            action: NodeAction::Delete(_)
        }))
    ));
    for bad in [
        &["pub", "payload"][..],
        &["sub"],
        &["items"],
        &["node", "create"],
        &["node", "rename", "a"],
        &["sub", "--node", "n", "--last", "x"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

/// The node options of `pub --create` and `node create`.
fn node_opts(args: &[&str]) -> Vec<String> {
    match ok(args).command {
        Some(Command::Pub(p)) => p.node_options(),
        Some(Command::Node(NodeArgs {
            action: NodeAction::Create(c),
        })) => c.node_options(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn node_options_set_and_its_old_spelling_config() {
    let want = ["max_items=5", "title=T"];
    for flag in ["--set", "--config"] {
        let publish = [
            "pub", "--node", "n", "--create", flag, want[0], flag, want[1], "{}",
        ];
        assert_eq!(node_opts(&publish), want, "pub {flag}");
        assert_eq!(
            node_opts(&["node", "create", "n", flag, want[0], flag, want[1]]),
            want,
            "node create {flag}"
        );
    }
    // Both spellings together: every option is kept.
    let mixed = node_opts(&["node", "create", "n", "--set", "a=1", "--config", "b=2"]);
    assert_eq!(mixed.len(), 2);
    assert!(mixed.contains(&"a=1".to_owned()) && mixed.contains(&"b=2".to_owned()));
    assert!(node_opts(&["pub", "--node", "n", "x"]).is_empty());
    // --help shows --set, and --config as the old spelling.
    for cmd in [&["pub", "--help"][..], &["node", "create", "--help"]] {
        let help = parse(cmd).expect_err("help");
        assert!(help.contains("--set"), "{help}");
        assert!(help.contains("old spelling of --set"), "{help}");
    }
}

#[test]
fn bad_command_lines_rejected() {
    for bad in [
        &["user"][..],
        &["user", "add"],
        &["user", "frobnicate", "x"],
        &["run", "--config"],
        &["run", "extra"],
        &["serve"],
        &["check-config", "--verbose"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} should be rejected");
    }
    // --help is reported through the same error path with exit status 0 in argh.
    let help = parse(&["--help"]).expect_err("help");
    assert!(help.contains("check-config"), "{help}");
}

#[test]
fn password_sources() {
    let no_stdin = std::io::empty();
    assert_eq!(
        read_password_from(Some("secret"), None, no_stdin, true),
        Ok("secret".to_owned())
    );
    assert!(read_password_from(Some("a"), Some(Path::new("/x")), std::io::empty(), false).is_err());
    let e = read_password_from(None, None, std::io::empty(), true).expect_err("tty");
    assert!(e.contains("ps"), "{e}");
    assert_eq!(
        read_password_from(None, None, &b"from stdin\nsecond line\n"[..], false),
        Ok("from stdin".to_owned())
    );
    assert_eq!(
        read_password_from(None, None, &b"crlf\r\n"[..], false),
        Ok("crlf".to_owned())
    );
    assert_eq!(
        read_password_from(None, None, &b" spaced \n"[..], false),
        Ok(" spaced ".to_owned()),
        "only the newline is trimmed"
    );
    assert!(read_password_from(None, None, &b"\n"[..], false).is_err());
    assert!(read_password_from(None, None, std::io::empty(), false).is_err());
    assert!(read_password_from(Some(""), None, std::io::empty(), false).is_err());
    assert!(read_password_from(Some("a\0b"), None, std::io::empty(), false).is_err());
    assert!(read_password_from(Some("a\nb"), None, std::io::empty(), false).is_err());
    let long = vec![b'x'; MAX_PASSWORD_BYTES + 10];
    assert!(read_password_from(None, None, &long[..], false).is_err());
    let exact = vec![b'x'; MAX_PASSWORD_BYTES];
    assert_eq!(
        read_password_from(None, None, &exact[..], false).map(|p| p.len()),
        Ok(MAX_PASSWORD_BYTES)
    );
    assert!(read_password_from(None, None, &[0xffu8, b'\n'][..], false).is_err());
}

/// A writer whose every write fails with `kind`.
struct Failing(std::io::ErrorKind);

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_out_treats_a_closed_pipe_as_the_end() {
    let mut buf = Vec::new();
    assert!(write_out(&mut buf, format_args!("a {}\n", 1)).expect("vec"));
    assert_eq!(buf, b"a 1\n");
    let closed = write_out(&mut Failing(ErrorKind::BrokenPipe), format_args!("x"));
    assert!(!closed.expect("a closed pipe is not an error"));
    let full = write_out(&mut Failing(ErrorKind::StorageFull), format_args!("x"));
    assert_eq!(full.expect_err("disk full").kind(), ErrorKind::StorageFull);
}

#[test]
fn password_file() {
    let dir = TempDir::new("cli-pw");
    let f = dir.join("pw");
    std::fs::write(&f, "hunter2\n").expect("write");
    assert_eq!(
        read_password_from(None, Some(&f), std::io::empty(), true),
        Ok("hunter2".to_owned())
    );
    std::fs::write(&f, "no-newline").expect("write");
    assert_eq!(
        read_password_from(None, Some(&f), std::io::empty(), true),
        Ok("no-newline".to_owned())
    );
    let e = read_password_from(None, Some(&dir.join("absent")), std::io::empty(), true)
        .expect_err("absent");
    assert!(e.contains("absent"), "{e}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

#[test]
fn check_config_defaults_and_exit_codes() {
    let text = check_config(None).expect("defaults are valid");
    assert_eq!(Config::from_toml_str(&text, None), Ok(Config::default()));
    let mut out = Vec::new();
    assert_eq!(check_config_main_to(None, &mut out), 0);
    assert_eq!(out, text.as_bytes());
    assert_eq!(
        check_config_main_to(None, &mut Failing(ErrorKind::BrokenPipe)),
        0
    );
    assert_eq!(
        check_config_main_to(None, &mut Failing(ErrorKind::StorageFull)),
        EX_IOERR
    );

    let dir = TempDir::new("cli-check");
    let cfg = dir.join("kinglet.toml");
    std::fs::write(&cfg, "[c2s]\nlisten = [\"0.0.0.0:5222\"]\n").expect("write");
    let e = check_config(Some(&cfg)).expect_err("no tls");
    assert_eq!(e.key.as_deref(), Some("c2s.listen"));
    assert_eq!(check_config_main_to(Some(&cfg), &mut Vec::new()), EX_CONFIG);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn check_config_verifies_tls_files() {
    let dir = TempDir::new("cli-tls");
    let cfg = dir.join("kinglet.toml");
    std::fs::write(&cfg, "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").expect("write");
    let e = check_config(Some(&cfg)).expect_err("files missing");
    assert_eq!(e.key.as_deref(), Some("tls.cert"));
    assert_eq!(e.path.as_deref(), Some(cfg.as_path()));
    assert!(e.message.contains("c.pem"), "{e}");

    std::fs::write(dir.join("c.pem"), "garbage").expect("write");
    let e = check_config(Some(&cfg)).expect_err("not pem");
    assert_eq!(e.key.as_deref(), Some("tls.cert"));

    std::fs::write(dir.join("c.pem"), PEM_CERT).expect("write");
    let e = check_config(Some(&cfg)).expect_err("key missing");
    assert_eq!(e.key.as_deref(), Some("tls.key"));

    std::fs::write(dir.join("k.pem"), PEM_CERT).expect("write");
    let e = check_config(Some(&cfg)).expect_err("cert is not a key");
    assert_eq!(e.key.as_deref(), Some("tls.key"));

    std::fs::write(dir.join("k.pem"), PEM_KEY).expect("write");
    let text = check_config(Some(&cfg)).expect("valid");
    assert!(
        text.contains(&dir.join("c.pem").to_string_lossy().into_owned()),
        "{text}"
    );
    assert_eq!(check_config_main_to(Some(&cfg), &mut Vec::new()), 0);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn check_config_prints_the_memory_table_and_compares_it() {
    let config = Config::default();
    let rows = config.memory_budget();
    let total = crate::limits::memory_budget_total(&rows);
    let shipped = MemoryReference {
        bytes: SHIPPED_MEMORY_MAX,
        source: "MemoryMax=128M (systemd/kinglet.service)".to_owned(),
    };
    let (table, warning) = memory_report(&config, &shipped);
    for r in &rows {
        assert!(
            table.contains(&format!("{:>14}  {:<42} {}", r.bytes, r.key, r.what)),
            "{table}"
        );
    }
    let total_line = format!("# {total:>14}  {:<42}", "total");
    assert!(table.contains(&total_line), "{table}");
    // 1024 connections do not fit in 128 MiB: a warning, in the table and for stderr.
    assert!(total > SHIPPED_MEMORY_MAX);
    assert!(
        table
            .contains("# WARNING: MemoryMax=128M (systemd/kinglet.service): the total is above it"),
        "{table}"
    );
    assert!(warning.expect("over").contains("MemoryMax=128M"));
    let roomy = MemoryReference {
        bytes: total,
        source: "MemoryMax=x".to_owned(),
    };
    let (table, warning) = memory_report(&config, &roomy);
    assert!(table.contains("# compared with MemoryMax=x: the total is within it"));
    assert_eq!(warning, None);
    // Every line is a TOML comment: the output still parses as the configuration.
    let (text, _) = check_config_against(None, &shipped).expect("defaults");
    assert!(text.ends_with(&memory_report(&config, &shipped).0));
    assert_eq!(Config::from_toml_str(&text, None), Ok(Config::default()));
}

#[test]
fn cgroup_memory_limit_is_read_from_the_own_cgroup() {
    let files = |want: &'static str, text: &'static str| {
        move |p: &Path| (p == Path::new(want)).then(|| text.to_owned())
    };
    let got = cgroup_memory_max(
        "0::/system.slice/kinglet.service\n",
        files(
            "/sys/fs/cgroup/system.slice/kinglet.service/memory.max",
            "134217728\n",
        ),
    );
    assert_eq!(
        got,
        Some(MemoryReference {
            bytes: 134_217_728,
            source: "MemoryMax=134217728 (/sys/fs/cgroup/system.slice/kinglet.service/memory.max)"
                .to_owned(),
        })
    );
    // No limit, cgroup v1 only, no file, or a path that climbs out: the shipped value.
    let no_limit = files("/sys/fs/cgroup/memory.max", "max\n");
    assert_eq!(cgroup_memory_max("0::/\n", no_limit), None);
    assert_eq!(
        cgroup_memory_max("4:memory:/x\n", files("/sys/fs/cgroup/x/memory.max", "1")),
        None
    );
    assert_eq!(cgroup_memory_max("0::/a\n", |_| None), None);
    assert_eq!(
        cgroup_memory_max("0::/../etc\n", |_| Some("1".to_owned())),
        None
    );
}
