use super::*;
use test_case::test_case;

const ZK: &str = "[zookeeper]\nconnect = \"zk1:2181\"\n[host]\nid = \"web-01\"\n";
const RUN: &str = "name = \"api\"\nrun = [\"bin/api\"]\nhealth = { tcp = \"127.0.0.1:8080\" }\n";

/// A config with one service made of `RUN` followed by `extra` lines.
fn with_service(extra: &str) -> String {
    format!("{ZK}[[service]]\n{RUN}{extra}\n")
}

/// The problems found in `text`, without their lines (see `problems_have_their_lines`).
fn problems(text: &str) -> Vec<String> {
    let found = Config::parse(text, "test.toml").unwrap_err().problems;
    found.into_iter().map(|p| Problem { line: None, ..p }.to_string()).collect()
}

#[test]
fn problems_have_their_lines_and_a_wrong_type_stops_nothing_else() {
    let text = format!(
        "{ZK}[[service]]\nname = \"api\"\nrun = [\"a\"]\nstop_timeout = 5\nhealth = {{ http = \"nope\" }}\n\
         [[service]]\nname = \"web\"\nrun = \"bin/web\"\nhealth = {{ tcp = \"localhost\" }}\n"
    );
    let base = ZK.lines().count();
    let found: Vec<String> = Config::parse(&text, "t").unwrap_err().problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            format!("service[0].stop_timeout: invalid type: integer `5`, expected a string (line {})", base + 4),
            format!("service[0].health.http: invalid URL \"nope\": relative URL without a base (line {})", base + 5),
            format!("service[1].run: invalid type: string \"bin/web\", expected a sequence (line {})", base + 8),
            format!("service[1].health.tcp: must be host:port (line {})", base + 9),
        ]
    );
}

#[test]
fn minimal_config_gets_the_defaults() {
    let config = Config::parse(&with_service(""), "test.toml").unwrap();
    assert_eq!(config.zookeeper.root, "/dc");
    assert_eq!(config.zookeeper.session_timeout, HumanDuration::secs(10));
    assert_eq!(config.host.data_dir, Path::new("/var/lib/baton"));
    assert_eq!(config.host.keep_releases, 3);
    let s = &config.services[0];
    assert_eq!(s.mode, RunMode::Run(vec!["bin/api".into()]));
    assert_eq!(s.stop_timeout, HumanDuration::secs(10));
    assert_eq!(s.health.interval, Duration::from_millis(500));
    assert_eq!(s.health.timeout, Duration::from_secs(2));
    assert_eq!(s.hooks, HooksConfig { prepare: None, drain: None, undrain: None, verify: None });
    assert_eq!(s.apply, Apply::Restart);
    assert!(s.env.is_empty());
    assert_eq!((s.output, s.on_shutdown), (Output::File, OnShutdown::Keep));
}

#[test]
fn tls_and_auth_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca = file("ca.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
    let key = file("key.pem", "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n");
    let digest = file("digest", "sidecar:s3cret\n");
    let text = format!(
        "[zookeeper]\nconnect = \"zk1:2281\"\ntls = {{ ca = \"{ca}\", cert = \"{ca}\", key = \"{key}\" }}\n\
         auth = {{ digest_file = \"{digest}\" }}\n[host]\nid = \"h\"\n[[service]]\n{RUN}"
    );
    let config = Config::parse(&text, "test.toml").unwrap();
    let tls = config.zookeeper.tls.clone().unwrap();
    assert_eq!((tls.ca.display().to_string(), tls.key.unwrap().display().to_string()), (ca, key));
    assert_eq!(read_digest(&config.zookeeper.auth.clone().unwrap().digest_file).unwrap().0, "sidecar");
    assert!(check_summary_mentions(&config, &["tls: ca", "auth: digest"]));
    assert_eq!(Config::parse(&with_service(""), "t").unwrap().zookeeper.tls, None, "open by default");
}

#[test]
fn host_id_defaults_to_the_hostname() {
    let text = format!("[zookeeper]\nconnect = \"zk1:2181\"\n[[service]]\n{RUN}");
    let config = Config::parse(&text, "test.toml").unwrap();
    let hostname = nix::unistd::gethostname().unwrap();
    assert_eq!(config.host.id, hostname.to_string_lossy());
}

#[test]
fn full_config_is_read() {
    let text = r#"
        [zookeeper]
        connect = "zk1:2181,zk2:2181/baton"
        root = "/prod"
        session_timeout = "6s"
        [host]
        id = "web-01"
        data_dir = "/srv/baton"
        keep_releases = 5
        [[service]]
        name = "api"
        run = ["bin/api", "--port", "8080"]
        stop_timeout = "3s"
        health = { http = "http://127.0.0.1:8080/health", interval = "1s", timeout = "300ms" }
        hooks = { drain = ["bin/drain"], undrain = ["bin/undrain"], timeout = "5s", prepare = ["bin/t"], prepare_timeout = "1m" }
        apply = "reload"
        reload_signal = "HUP"
        env = { PORT = "8080" }
        output = "inherit"
        on_shutdown = "stop"
        [[service]]
        name = "db"
        start = ["systemctl", "start", "db"]
        stop = ["systemctl", "stop", "db"]
        health = { exec = ["bin/check"] }
    "#;
    let config = Config::parse(text, "test.toml").unwrap();
    assert_eq!(config.zookeeper.connect, "zk1:2181,zk2:2181/baton");
    assert_eq!(config.host.keep_releases, 5);
    let api = &config.services[0];
    assert_eq!(api.health.check, HealthCheck::Http("http://127.0.0.1:8080/health".into()));
    assert_eq!(api.health.timeout, Duration::from_millis(300));
    let drain = Hook { command: vec!["bin/drain".to_string()], timeout: Duration::from_secs(5) };
    assert_eq!(api.hooks.drain, Some(drain));
    let prepare = Hook { command: vec!["bin/t".to_string()], timeout: Duration::from_secs(60) };
    assert_eq!(api.hooks.prepare, Some(prepare), "a hook's own timeout wins");
    assert_eq!(api.apply, Apply::Reload(Reload::Signal(nix::sys::signal::Signal::SIGHUP)));
    assert_eq!(api.env.get("PORT").map(String::as_str), Some("8080"));
    assert_eq!((api.output, api.on_shutdown), (Output::Inherit, OnShutdown::Stop));
    let db = &config.services[1];
    assert!(matches!(&db.mode, RunMode::StartStop { start, .. } if start[0] == "systemctl"));
    assert_eq!(db.health.check, HealthCheck::Exec(vec!["bin/check".into()]));
    assert!(check_summary_mentions(&config, &["web-01", "service api", "service db", "exec bin/check"]));
}

fn check_summary_mentions(config: &Config, words: &[&str]) -> bool {
    let summary = config.summary("test.toml");
    words.iter().all(|w| summary.contains(w))
}

#[test_case("", "zookeeper.connect: is required"; "connect missing")]
#[test_case("connect = \"\"", "zookeeper.connect: must name at least one server"; "connect empty")]
#[test_case("connect = \"zk1\"", "zookeeper.connect: server \"zk1\" must be host:port"; "no port")]
#[test_case("connect = \"zk1:99999\"", "invalid port"; "bad port")]
#[test_case("connect = \"zk1:2181,\"", "server \"\" must be host:port"; "trailing comma")]
#[test_case("connect = \"zk1:2181/a/\"", "zookeeper.connect: chroot: invalid root path"; "bad chroot")]
#[test_case("connect = \"zk1:2181\"\nroot = \"dc\"", "zookeeper.root: invalid root path \"dc\""; "relative root")]
#[test_case("connect = \"zk1:2181\"\nsession_timeout = \"soon\"", "zookeeper.session_timeout: invalid duration"; "bad timeout")]
#[test_case("connect = \"zk1:2181\"\nsession_timeout = \"0s\"", "zookeeper.session_timeout: must be greater than zero"; "zero timeout")]
#[test_case("connect = \"zk1:2181\"\nchroot = \"/x\"", "zookeeper.chroot: unknown field `chroot`"; "unknown key")]
#[test_case("connect = 2181", "zookeeper.connect: invalid type"; "wrong type")]
#[test_case("connect = \"zk1:2181\"\ntls = { cert = \"/c\", key = \"/k\" }", "zookeeper.tls.ca: is required with tls"; "tls without ca")]
#[test_case("connect = \"zk1:2181\"\ntls = { ca = \"ca.pem\" }", "zookeeper.tls.ca: must be an absolute path"; "relative ca")]
#[test_case("connect = \"zk1:2181\"\ntls = { ca = \"/nonexistent/ca.pem\" }", "zookeeper.tls.ca: failed to read /nonexistent/ca.pem"; "missing ca")]
#[test_case("connect = \"zk1:2181\"\ntls = { ca = \"/etc/hostname\" }", "zookeeper.tls.ca: /etc/hostname is not a PEM certificate"; "ca not pem")]
#[test_case("connect = \"zk1:2181\"\ntls = { ca = \"/etc/hostname\", cert = \"/c\" }", "zookeeper.tls.key: is required with cert"; "cert without key")]
#[test_case("connect = \"zk1:2181\"\ntls = { ca = \"/etc/hostname\", key = \"/k\" }", "zookeeper.tls.cert: is required with key"; "key without cert")]
#[test_case("connect = \"zk1:2181\"\ntls = { ca = \"/c\", crt = \"/c\" }", "zookeeper.tls.crt: unknown field `crt`"; "unknown tls key")]
#[test_case("connect = \"zk1:2181\"\nauth = {}", "zookeeper.auth.digest_file: is required with auth"; "auth without file")]
#[test_case("connect = \"zk1:2181\"\nauth = { digest_file = \"/nonexistent/d\" }", "zookeeper.auth.digest_file: failed to read /nonexistent/d"; "missing digest file")]
#[test_case("connect = \"zk1:2181\"\nauth = { digest_file = \"/etc/hostname\" }", "zookeeper.auth.digest_file: /etc/hostname must hold one line user:password"; "digest file without colon")]
fn zookeeper_problems(zk: &str, expected: &str) {
    let text = format!("[zookeeper]\n{zk}\n[host]\nid = \"h\"\n[[service]]\n{RUN}");
    let found = problems(&text);
    assert!(found.iter().any(|p| p.starts_with(expected) || p.contains(expected)), "{found:#?} lacks {expected:?}");
}

#[test_case("id = \"web/01\"", "host.id: host id \"web/01\" contains '/'"; "bad id")]
#[test_case("id = \"h\"\ndata_dir = \"var/lib\"", "host.data_dir: must be an absolute path"; "relative dir")]
#[test_case("id = \"h\"\nkeep_releases = 1", "host.keep_releases: must be at least 2"; "keep one")]
#[test_case("id = \"h\"\nkeep_releases = -4", "host.keep_releases: must be at least 2"; "keep negative")]
#[test_case("id = \"h\"\nname = \"x\"", "host.name: unknown field `name`"; "unknown key")]
fn host_problems(host: &str, expected: &str) {
    let text = format!("[zookeeper]\nconnect = \"zk:1\"\n[host]\n{host}\n[[service]]\n{RUN}");
    let found = problems(&text);
    assert!(found.iter().any(|p| p.starts_with(expected)), "{found:#?} lacks {expected:?}");
}

#[test_case("name = \"api\"\nhealth = { tcp = \"h:1\" }", "service[0]: one of run, or start and stop, is required"; "no mode")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nstart = [\"b\"]\nstop = [\"c\"]\nhealth = { tcp = \"h:1\" }", "service[0]: run and start/stop are mutually exclusive"; "both modes")]
#[test_case("name = \"api\"\nstart = [\"b\"]\nhealth = { tcp = \"h:1\" }", "service[0].stop: is required with start"; "start alone")]
#[test_case("name = \"api\"\nstop = [\"b\"]\nhealth = { tcp = \"h:1\" }", "service[0].start: is required with stop"; "stop alone")]
#[test_case("name = \"api\"\nrun = []\nhealth = { tcp = \"h:1\" }", "service[0].run: must not be empty"; "empty run")]
#[test_case("name = \"api\"\nrun = [\" \"]\nhealth = { tcp = \"h:1\" }", "service[0].run[0]: the program must not be empty"; "empty program")]
#[test_case("run = [\"a\"]\nhealth = { tcp = \"h:1\" }", "service[0].name: is required"; "no name")]
#[test_case("name = \"a/b\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }", "service[0].name: service name \"a/b\" contains '/'"; "bad name")]
#[test_case("name = \"api\"\nrun = [\"a\"]", "service[0].health: is required"; "no health")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { interval = \"1s\" }", "service[0].health: exactly one of http, tcp, exec is required"; "no check")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\", exec = [\"x\"] }", "service[0].health: exactly one of http, tcp, exec is required"; "two checks")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { http = \"ftp://h/x\" }", "service[0].health.http: URL \"ftp://h/x\" has scheme \"ftp\""; "ftp url")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { http = \"not a url\" }", "service[0].health.http: invalid URL"; "bad url")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"localhost\" }", "service[0].health.tcp: must be host:port"; "tcp no port")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { exec = [] }", "service[0].health.exec: must not be empty"; "empty exec")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\", interval = \"0ms\" }", "service[0].health.interval: must be greater than zero"; "zero interval")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\", timeout = \"x\" }", "service[0].health.timeout: invalid duration \"x\""; "bad check timeout")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\", port = 1 }", "service[0].health.port: unknown field `port`"; "unknown health key")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nstop_timeout = \"ever\"", "service[0].stop_timeout: invalid duration"; "bad stop timeout")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nhooks = { drain = [] }", "service[0].hooks.drain: must not be empty"; "empty drain")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nhooks = { drian = [\"x\"] }", "service[0].hooks.drian: unknown field `drian`"; "unknown hook")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nhooks = { verify_timeout = \"1s\" }", "service[0].hooks.verify_timeout: is set but there is no verify hook"; "timeout without hook")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\napply = \"reload\"", "service[0].apply: apply = \"reload\" needs reload = [...] or reload_signal"; "reload without how")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nreload = [\"x\"]", "service[0].apply: reload and reload_signal need apply = \"reload\""; "reload without apply")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\napply = \"reload\"\nreload_signal = \"HUPP\"", "service[0].reload_signal: unknown signal \"HUPP\""; "bad signal")]
#[test_case("name = \"api\"\nstart = [\"a\"]\nstop = [\"b\"]\nhealth = { tcp = \"h:1\" }\napply = \"reload\"\nreload_signal = \"HUP\"", "service[0].reload_signal: a start/stop service has no process to signal"; "signal without process")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\napply = \"hot\"", "service[0].apply: expected \"restart\" or \"reload\", not \"hot\""; "bad apply")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nenv = { BATON_VERSION = \"1\" }", "service[0].env.BATON_VERSION: the BATON_ prefix is reserved"; "reserved env")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nenv = { PORT = 8080 }", "service[0].env.PORT: invalid type"; "env not a string")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\noutput = \"syslog\"", "service[0].output: expected \"file\" or \"inherit\", not \"syslog\""; "bad output")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\non_shutdown = \"kill\"", "service[0].on_shutdown: expected \"keep\" or \"stop\", not \"kill\""; "bad on_shutdown")]
#[test_case("name = \"api\"\nrun = [\"a\"]\nhealth = { tcp = \"h:1\" }\nrestart = \"always\"", "service[0].restart: unknown field `restart`"; "unknown service key")]
fn service_problems(service: &str, expected: &str) {
    let found = problems(&format!("{ZK}[[service]]\n{service}\n"));
    assert!(found.iter().any(|p| p.starts_with(expected)), "{found:#?} lacks {expected:?}");
}

#[test]
fn unknown_top_level_keys_are_named() {
    let found = problems(&format!("{}[zookeper]\nconnect = \"x\"\n", with_service("")));
    assert_eq!(
        found,
        ["zookeper: unknown key; expected one of zookeeper, host, trust, limits, download, peers, metrics, service"]
    );
}

#[test]
fn trusted_keys_are_checked_one_by_one() {
    let key = minisign::KeyPair::generate_unencrypted_keypair().unwrap().pk.to_base64();
    let good = format!("[trust]\nminisign_keys = [\"{key}\"]\n{}", with_service(""));
    let config = Config::parse(&good, "t").unwrap();
    assert_eq!(config.trust.minisign_keys, std::slice::from_ref(&key));
    let bad = format!("[trust]\nminisign_keys = [\"{key}\", \"RWbogus\"]\nminisgn = 1\n{}", with_service(""));
    let found = problems(&bad);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("trust.minisign_keys[1]: invalid minisign public key \"RWbogus\""), "{found:?}");
    assert!(found[1].starts_with("trust.minisgn: unknown field"), "{found:?}");
}

#[test]
fn services_are_required_and_unique() {
    assert_eq!(problems(ZK), ["service: at least one [[service]] is required"]);
    let text = format!("{ZK}[[service]]\n{RUN}[[service]]\n{RUN}");
    assert_eq!(problems(&text), ["service[1].name: service \"api\" is configured twice"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        [zookeeper]
        root = "dc"
        [host]
        id = "web 01"
        keep_releases = 1
        [[service]]
        name = "api"
        run = ["bin/api"]
        health = { tcp = "h:1" }
        [[service]]
        name = "worker"
        run = ["bin/w"]
        stop_timeout = "later"
        output = "syslog"
        [[service]]
        name = "x"
        run = ["a"]
        health = { tcp = "h:1" }
        bogus = 1
    "#;
    let err = Config::parse(text, "sidecar.toml").unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "zookeeper.connect",
            "zookeeper.root",
            "host.id",
            "host.keep_releases",
            "service[1].health",
            "service[1].stop_timeout",
            "service[1].output",
            "service[2].bogus"
        ]
    );
    let shown = err.to_string();
    assert!(shown.starts_with("invalid config sidecar.toml: 8 problems:\n  zookeeper.connect: is required"), "{shown}");
    assert!(shown.contains("\n  service[2].bogus: unknown field `bogus`"), "{shown}");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let found = problems("[zookeeper]\nconnect = \"zk:1\"\nroot = /dc\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("TOML syntax error at line 3, column 8:"), "{found:?}");
}

#[test]
fn unreadable_file_is_one_problem() {
    let err = Config::load(Path::new("/nonexistent/sidecar.toml")).unwrap_err();
    assert_eq!(err.origin, "/nonexistent/sidecar.toml");
    assert!(err.to_string().starts_with("invalid config /nonexistent/sidecar.toml: failed to read the file:"), "{err}");
}

#[test]
fn check_summarises_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, with_service("")).unwrap();
    let summary = check(&path).unwrap();
    assert!(summary.contains("is valid") && summary.contains("service api: run bin/api"), "{summary}");
    std::fs::write(&path, "[zookeeper]\n").unwrap();
    assert!(check(&path).is_err());
}

#[test]
fn command_env_adds_the_baton_variables() {
    let config = Config::parse(&with_service("env = { PORT = \"1\" }"), "t").unwrap();
    let env = config.services[0].command_env("1.2.0", Path::new("/r/1.2.0"));
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!((get("PORT"), get("BATON_SERVICE"), get("BATON_VERSION")), (Some("1"), Some("api"), Some("1.2.0")));
    assert_eq!(get("BATON_RELEASE_DIR"), Some("/r/1.2.0"));
}

#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../../docs/config.md");
    let example = doc.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
    let config = Config::parse(example, "docs/config.md").unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "db-proxy"]);
}

#[test]
fn limits_and_download_pace_are_read_with_units_and_checked() {
    let text = format!(
        "[limits]\nurl_prefixes = [\"https://repo/\"]\nfile_dirs = [\"/srv/rel\"]\nmax_artifact_size = \"2GiB\"\n\
         max_unpacked_size = 1000\nmax_entries = 10\n[download]\ndeadline = \"10m\"\nmin_rate = \"10KB/s\"\n{}",
        with_service("")
    );
    let config = Config::parse(&text, "t").unwrap();
    assert_eq!(config.limits.download.url_prefixes, ["https://repo/"]);
    assert_eq!(config.limits.download.file_dirs, [PathBuf::from("/srv/rel")]);
    assert_eq!(config.limits.download.max_artifact, 2 << 30);
    assert_eq!(config.limits.unpack.max_bytes, 1000);
    assert_eq!(config.limits.unpack.max_entries, 10);
    assert_eq!(config.download.deadline, Duration::from_secs(600));
    assert_eq!(config.download.min_rate, 10_000);
    let defaults = Config::parse(&with_service(""), "t").unwrap();
    assert!(defaults.limits.download.file_dirs.is_empty(), "file:// is off by default");
    let bad = format!(
        "[limits]\nurl_prefixes = [\"ftp://x/\"]\nfile_dirs = [\"rel\"]\nmax_artifact_size = \"2 parsecs\"\nmax_entries = 0\n{}",
        with_service("")
    );
    let found = problems(&bad);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].starts_with("limits.url_prefixes[0]: \"ftp://x/\" must start with https://"), "{found:?}");
    assert!(found[1].starts_with("limits.file_dirs[0]: rel must be an absolute directory"), "{found:?}");
    assert!(found[2].starts_with("limits.max_artifact_size: invalid size \"2 parsecs\": unknown unit"), "{found:?}");
    assert!(found[3].starts_with("limits.max_entries: must be at least 1"), "{found:?}");
}

#[test]
fn peers_are_off_by_default_and_read_with_their_defaults() {
    assert_eq!(Config::parse(&with_service(""), "test.toml").unwrap().peers, None);
    let text = format!("{ZK}[peers]\nlisten = \"10.0.0.5:7070\"\n[[service]]\n{RUN}");
    let peers = Config::parse(&text, "test.toml").unwrap().peers.unwrap();
    assert_eq!(peers.listen, "10.0.0.5:7070".parse().unwrap());
    assert_eq!(peers.advertise, "10.0.0.5:7070");
    assert_eq!((peers.max_uploads, peers.origin_fetches, peers.stall), (4, 3, Duration::from_secs(5)));
    assert_eq!(peers.max_upload_rate, None);
    let text = format!(
        "{ZK}[peers]\nlisten = \"0.0.0.0:7070\"\nadvertise = \"web-01:7070\"\nmax_upload_rate = \"2MiB/s\"\n[[service]]\n{RUN}"
    );
    let peers = Config::parse(&text, "test.toml").unwrap().peers.unwrap();
    assert_eq!((peers.advertise.as_str(), peers.max_upload_rate), ("web-01:7070", Some(2 << 20)));
    let summary = Config::parse(&text, "test.toml").unwrap().summary("test.toml");
    assert!(summary.contains("peers: listen 0.0.0.0:7070 (advertised web-01:7070)"), "{summary}");
}

#[test_case("advertise = \"a:1\"", "peers.listen: is required"; "no listen")]
#[test_case("listen = \"web:7070\"", "peers.listen: \"web:7070\" is not IP:PORT"; "listen name")]
#[test_case("listen = \"0.0.0.0:7070\"", "peers.advertise: is required when peers.listen (0.0.0.0:7070) is a wildcard"; "wildcard")]
#[test_case("listen = \"0.0.0.0:7070\"\nadvertise = \"a/b:1\"", "peers.advertise: \"a/b:1\" is not HOST:PORT"; "bad advertise")]
#[test_case("listen = \"10.0.0.5:7070\"\nmax_uploads = 0", "peers.max_uploads: must be between 1 and 1000, not 0"; "no uploads")]
#[test_case("listen = \"10.0.0.5:7070\"\norigin_fetches = -1", "peers.origin_fetches: must be between 1 and 100, not -1"; "negative fetches")]
#[test_case("listen = \"10.0.0.5:7070\"\nstall = \"0s\"", "peers.stall: must be greater than zero"; "zero stall")]
#[test_case("listen = \"10.0.0.5:7070\"\nport = 1", "peers.port: unknown field `port`"; "unknown key")]
fn peers_problems(peers: &str, expected: &str) {
    let found = problems(&format!("{ZK}[peers]\n{peers}\n[[service]]\n{RUN}"));
    assert!(found.iter().any(|p| p.contains(expected)), "{expected:?} not in {found:?}");
}
