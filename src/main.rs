//! The `kinglet` binary: parse the command line, then run the broker or a tool command.

use kinglet::cli::{Args, Command};

fn main() {
    let args: Args = argh::from_env();
    if args.version {
        println!("kinglet {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let code = match args.command {
        None => run(None),
        Some(Command::Run(r)) => run(r.config.as_deref()),
        Some(Command::CheckConfig(c)) => kinglet::cli::check_config_main(c.config.as_deref()),
        Some(Command::User(u)) => kinglet::admin::user_main(&u.action),
    };
    std::process::exit(code);
}

fn run(path: Option<&std::path::Path>) -> i32 {
    let config = match kinglet::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kinglet: invalid configuration: {e}");
            return 78;
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
