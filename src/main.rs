//! The `kinglet` binary: parse the command line, then run the broker or a tool command.

use kinglet::cli::{Args, Command, print_stdout};
use kinglet::exit::EX_USAGE;

fn main() {
    let args = parse_args();
    if args.version {
        std::process::exit(print_stdout(
            &format!("{}\n", kinglet::cli::version_line()),
            0,
        ));
    }
    let code = match args.command {
        None => run(None),
        Some(Command::Run(r)) => run(r.config.as_deref()),
        Some(Command::CheckConfig(c)) => kinglet::cli::check_config_main(c.config.as_deref()),
        Some(Command::User(u)) => kinglet::admin::user_main(&u.action),
        Some(other) => client(&other),
    };
    std::process::exit(code);
}

fn run(path: Option<&std::path::Path>) -> i32 {
    let config = match kinglet::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kinglet: invalid configuration: {e}");
            return kinglet::exit::EX_CONFIG;
        }
    };
    let level = kinglet::logging::init(&config.log_level);
    tracing::debug!(level, "logging initialised");
    match kinglet::daemon::run_with_reload(config, path.map(std::path::Path::to_path_buf)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kinglet: {e}");
            e.exit_code()
        }
    }
}

/// Parses argv like `argh::from_env`, but a usage error exits with 64 (`EX_USAGE`), not 1
/// (which the client commands use for an XMPP error reply). `--help` still exits 0.
fn parse_args() -> Args {
    let strings: Vec<String> = std::env::args_os()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let Some((cmd, rest)) = strings.split_first() else {
        eprintln!("kinglet: no program name in argv");
        std::process::exit(EX_USAGE);
    };
    let cmd = std::path::Path::new(cmd)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("kinglet");
    let mut rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    // argh takes any argument starting with '-' for an option, so `kinglet pub ... -` (the
    // payload from stdin) would be refused: move a lone "-" that is not an option's value
    // (`--node -` stays) behind a "--".
    const PUB_SWITCHES: [&str; 4] = ["--json", "--lines", "--create", "--insecure"];
    if rest.first() == Some(&"pub") && !rest.contains(&"--") {
        let is_payload = |i: usize| {
            rest[i] == "-"
                && rest
                    .get(i.wrapping_sub(1))
                    .is_none_or(|p| !p.starts_with('-') || PUB_SWITCHES.contains(p))
        };
        if let Some(i) = (1..rest.len()).find(|&i| is_payload(i)) {
            rest.remove(i);
            rest.extend(["--", "-"]);
        }
    }
    match <Args as argh::FromArgs>::from_args(&[cmd], &rest) {
        Ok(args) => args,
        Err(early) => match early.status {
            // --help: a closed stdout (`kinglet pub --help | head -1`) ends it quietly.
            Ok(()) => std::process::exit(print_stdout(&format!("{}\n", early.output), 0)),
            Err(()) => {
                eprintln!("{}\nRun {cmd} --help for more information.", early.output);
                std::process::exit(EX_USAGE);
            }
        },
    }
}

/// The client commands (`pub`, `sub`, `nodes`, `items`, `node`).
#[cfg(feature = "client")]
fn client(cmd: &Command) -> i32 {
    kinglet::client::run(cmd).unwrap_or(EX_USAGE)
}

/// Without the `client` feature the client commands parse but cannot run.
#[cfg(not(feature = "client"))]
fn client(_cmd: &Command) -> i32 {
    eprintln!("kinglet: this build has no client commands (built without the `client` feature)");
    kinglet::exit::EX_UNAVAILABLE
}
