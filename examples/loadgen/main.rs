//! `loadgen`: a load generator that speaks raw XMPP (or MQTT 3.1.1) to any server and prints
//! one JSON line per run on stdout and a readable line on stderr. Not linked into the daemon.
//!
//! ```text
//! cargo run --release --example loadgen -- SCENARIO [options]
//!   idle | login | fanout | fanin | soak | resume   the scenarios (see benches/compare.sh)
//!   register                                 XEP-0077 accounts u0..u<count-1>, p0..p99
//!   kinglet-users --data-dir DIR             the same accounts written into a kinglet store
//! options: --name LABEL --proto xmpp|mqtt --server HOST:PORT --tls-server HOST:PORT
//!   --domain D --pubsub JID --pid PID --password PW --ca PEM --count N --items N
//!   --window N --payload BYTES --secs S --tls --tag PREFIX --plain
//! ```

mod r#gen;

use r#gen::{Opts, Proto};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().cloned() else {
        eprintln!(
            "usage: loadgen idle|login|fanout|fanin|soak|resume|register|kinglet-users [options]"
        );
        std::process::exit(2);
    };
    let mut o = Opts::default();
    let mut data_dir = None;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        let n = || v.parse::<usize>().unwrap_or(0);
        let mut flag = false;
        match args[i].as_str() {
            "--name" => o.name = v.clone(),
            "--proto" => {
                o.proto = if v == "mqtt" {
                    Proto::Mqtt
                } else {
                    Proto::Xmpp
                }
            }
            "--server" => o.server = v.clone(),
            "--tls-server" => o.tls_server = Some(v.clone()),
            "--domain" => o.domain = v.clone(),
            "--pubsub" => o.pubsub = v.clone(),
            "--pid" => o.pid = v.parse().ok(),
            "--password" => o.password = v.clone(),
            "--ca" => o.ca = Some(v.clone().into()),
            "--count" => o.count = n().min(100_000),
            "--items" => o.items = n().min(10_000_000),
            "--window" => o.window = n().clamp(1, 100_000),
            "--payload" => o.payload = n().clamp(1, 60_000),
            "--secs" => o.secs = n().min(3600) as u64,
            "--tag" => o.tag = v.clone(),
            "--data-dir" => data_dir = Some(v.clone()),
            "--tls" | "--plain" => flag = true,
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
        if flag {
            if args[i] == "--plain" {
                o.plain = true;
            } else {
                o.tls = true;
            }
            i += 1;
        } else {
            i += 2;
        }
    }
    let r = match scenario.as_str() {
        "idle" => r#gen::idle(&o).map(|_| ()),
        "login" => r#gen::login(&o).map(|_| ()),
        "fanout" => r#gen::fanout(&o).map(|_| ()),
        "fanin" => r#gen::fanin(&o).map(|_| ()),
        "soak" => r#gen::soak(&o),
        "resume" => r#gen::resume(&o).map(|_| ()),
        "register" => register_all(&o),
        "kinglet-users" => kinglet_users(&o, data_dir),
        other => Err(format!("unknown scenario {other}")),
    };
    if let Err(e) = r {
        eprintln!("loadgen {scenario} against {}: {e}", o.name);
        println!(
            "{{\"bench\":\"{scenario}\",\"server\":\"{}\",\"error\":\"{}\"}}",
            o.name,
            e.replace(['"', '\\'], "'")
        );
        std::process::exit(1);
    }
}

fn names(o: &Opts) -> impl Iterator<Item = String> {
    (0..o.count)
        .map(|i| format!("u{i}"))
        .chain((0..100).map(|p| format!("p{p}")))
}

fn register_all(o: &Opts) -> Result<(), String> {
    for u in names(o) {
        r#gen::register(o, &u)?;
    }
    Ok(())
}

/// Accounts straight into a kinglet store (the daemon must not be running): one derivation
/// shared by every account, so 5,000 accounts take a second, not a minute.
fn kinglet_users(o: &Opts, dir: Option<String>) -> Result<(), String> {
    let dir = dir.ok_or("--data-dir is required")?;
    let store = kinglet::store::Store::open(std::path::Path::new(&dir), 1 << 20)
        .map_err(|e| e.to_string())?;
    let creds = kinglet::sasl::StoredCredentials::derive(
        &kinglet::system::SystemEnv::new(),
        &o.password,
        4096,
    )
    .to_bytes();
    for u in names(o) {
        store.user_add(&u, &creds).map_err(|e| e.to_string())?;
    }
    Ok(())
}
