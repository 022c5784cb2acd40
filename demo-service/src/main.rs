//! baton-demo-service: a tiny HTTP service for baton's tests and demo.
//!
//! `baton-demo-service --port P --version V [--bind ADDR] [--health-fail]
//! [--crash-after DUR] [--start-delay DUR] [--config FILE]`; `PORT` and `DEMO_VERSION` (then
//! `BATON_VERSION`, set by the sidecar) are read when the flags are absent. `GET /health` answers `ok` (503 with `--health-fail`),
//! `GET /version` the version, `GET /` a line with version and pid. SIGTERM or SIGINT
//! make it exit 0 at once; `--crash-after` makes it exit 1.
//!
//! `--config FILE` is read at start and again on SIGHUP (a reload, as
//! `apply = "reload"` sends): `GET /config` answers its text, and a config holding
//! the line `health=fail` makes `/health` answer 503.

use nix::sys::signal::{SigSet, Signal};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

#[derive(Debug)]
struct Args {
    port: u16,
    version: String,
    bind: String,
    health_fail: bool,
    crash_after: Option<Duration>,
    start_delay: Option<Duration>,
    config: Option<std::path::PathBuf>,
}

/// The config file's text as last read (start, SIGHUP).
static CONFIG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn load_config(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("unreadable {}: {e}\n", path.display()));
    println!("config loaded from {}", path.display());
    *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = text;
}

fn parse_args() -> Result<Args, String> {
    let mut port = std::env::var("PORT").ok();
    let env_version = std::env::var("DEMO_VERSION").or_else(|_| std::env::var("BATON_VERSION"));
    let mut version = env_version.unwrap_or_else(|_| "dev".into());
    let (mut bind, mut health_fail, mut crash_after, mut start_delay) = ("127.0.0.1".to_string(), false, None, None);
    let mut config = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let duration = |v: String| humantime::parse_duration(&v).map_err(|e| format!("invalid duration {v:?}: {e}"));
        match flag.as_str() {
            "--port" => port = Some(value()?),
            "--version" => version = value()?,
            "--bind" => bind = value()?,
            "--health-fail" => health_fail = true,
            "--crash-after" => crash_after = Some(duration(value()?)?),
            "--start-delay" => start_delay = Some(duration(value()?)?),
            "--config" => config = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let port = port.ok_or("--port (or PORT) is required")?;
    let port = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    Ok(Args { port, version, bind, health_fail, crash_after, start_delay, config })
}

/// Blocks SIGTERM, SIGINT and SIGHUP in every thread; exits 0 when one of the first
/// two arrives, reloads the config (if any) on SIGHUP.
fn exit_on_signal(config: Option<std::path::PathBuf>) -> nix::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block()?;
    std::thread::spawn(move || {
        loop {
            let signal = set.wait();
            if signal == Ok(Signal::SIGHUP) {
                println!("received SIGHUP, reloading");
                if let Some(path) = &config {
                    load_config(path);
                }
                continue;
            }
            println!("received {}, exiting", signal.map_or("a signal", |s| s.as_str()));
            std::process::exit(0);
        }
    });
    Ok(())
}

fn respond(stream: TcpStream, args: &Args) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let config = CONFIG.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let config_fails = config.lines().any(|l| l.trim() == "health=fail");
    let (status, body) = match path {
        "/health" if args.health_fail || config_fails => ("503 Service Unavailable", "failing\n".to_string()),
        "/config" => ("200 OK", config),
        "/health" => ("200 OK", "ok\n".into()),
        "/version" => ("200 OK", args.version.clone()),
        "/" => ("200 OK", format!("baton-demo-service version {} pid {}\n", args.version, std::process::id())),
        _ => ("404 Not Found", "not found\n".into()),
    };
    let head = format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n", body.len());
    (&stream).write_all(format!("{head}connection: close\r\n\r\n{body}").as_bytes())
}

fn run(args: Args) -> Result<(), String> {
    if let Some(path) = &args.config {
        load_config(path);
    }
    exit_on_signal(args.config.clone()).map_err(|e| format!("failed to handle signals: {e}"))?;
    if let Some(after) = args.crash_after {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            eprintln!("crashing as asked after {after:?}");
            std::process::exit(1);
        });
    }
    if let Some(delay) = args.start_delay {
        std::thread::sleep(delay);
    }
    let listener = TcpListener::bind((args.bind.as_str(), args.port))
        .map_err(|e| format!("failed to listen on {}:{}: {e}", args.bind, args.port))?;
    println!("baton-demo-service {} pid {} listening on {}", args.version, std::process::id(), args.port);
    for stream in listener.incoming().flatten() {
        if let Err(err) = respond(stream, &args) {
            eprintln!("request failed: {err}");
        }
    }
    Ok(())
}

fn main() {
    if let Err(err) = parse_args().and_then(run) {
        eprintln!("baton-demo-service: {err}");
        std::process::exit(2);
    }
}
