//! Driving the real `deployctl` binary against a test root, and looking at
//! ZooKeeper around it: a client, a recursive snapshot (to prove a refused command
//! wrote nothing), and helpers that play the part of sidecars by writing znodes.

use crate::{shared_server, unique_root};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use znode_schema::{Current, Layout, Ticket, Upgrading, encode};
use zookeeper_client as zk;

/// The identity deployctl signs with in tests (`--by`).
pub const BY: &str = "tester@test";

/// One command's outcome.
#[derive(Debug)]
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// deployctl pointed at one unique root of a ZooKeeper.
#[derive(Debug, Clone)]
pub struct Ctl {
    /// The connect string.
    pub connect: String,
    /// The root (`--root`).
    pub root: String,
    /// Its layout.
    pub layout: Layout,
    /// More global options (credentials: `--tls-ca`, `--digest-file`...), empty by default.
    pub global: Vec<String>,
}

impl Ctl {
    /// A unique root on the shared server.
    pub fn new(name: &str) -> Ctl {
        Ctl::on(&shared_server().connect_string(), name)
    }

    /// A unique root on the server at `connect`.
    pub fn on(connect: &str, name: &str) -> Ctl {
        let root = unique_root(name);
        Ctl { connect: connect.into(), layout: Layout::new(&root).expect("a valid root"), root, global: Vec::new() }
    }

    /// The command with `--zk`, `--root` and `--by` set, not yet started.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(crate::bin::path("deployctl"));
        cmd.args(["--zk", &self.connect, "--root", &self.root, "--by", BY]).args(&self.global).args(args);
        cmd.env_remove("BATON_ZK").env_remove("BATON_ROOT").env_remove("BATON_BY");
        for var in ["BATON_ZK_TLS_CA", "BATON_ZK_TLS_CERT", "BATON_ZK_TLS_KEY", "BATON_ZK_DIGEST_FILE"] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs deployctl to completion (at most 60 s).
    pub async fn run(&self, args: &[&str]) -> Run {
        run_command(self.command(args)).await
    }

    /// Runs deployctl and asserts it succeeded.
    pub async fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args).await;
        assert_eq!(r.code, 0, "deployctl {args:?} failed: {r:?}");
        r
    }

    /// `deployctl init`, then `current/<svc>` for the services these tests stage
    /// (`api`, `web`, `db`), as sidecars running them create at session start:
    /// `stage` refuses a service no sidecar has ever registered.
    pub async fn init_with_services(&self) -> Run {
        let r = self.ok(&["init"]).await;
        let c = client(&self.connect).await;
        for svc in ["api", "web", "db"] {
            c.mkdir(&self.layout.current_service(svc), &zk::CreateMode::Persistent.with_acls(acl())).await.unwrap();
        }
        r
    }
}

/// Runs a prepared command to completion (at most 60 s).
pub async fn run_command(cmd: std::process::Command) -> Run {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("deployctl finished within 60 s")
        .expect("run deployctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A client of `connect` (6 s sessions).
pub async fn client(connect: &str) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(6))
        .connect(connect)
        .await
        .unwrap_or_else(|e| panic!("connect to {connect}: {e}"))
}

/// Every node under `root` (included) with its data, `None` for no root.
pub async fn snapshot(c: &zk::Client, root: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        let Ok((data, _)) = c.get_data(&p).await else { continue };
        for child in c.list_children(&p).await.unwrap_or_default() {
            todo.push(if p == "/" { format!("/{child}") } else { format!("{p}/{child}") });
        }
        out.insert(p, data);
    }
    out
}

fn acl() -> zk::Acls<'static> {
    zk::Acls::anyone_all()
}

/// Creates or overwrites a persistent node with its parents.
pub async fn put(c: &zk::Client, path: &str, data: &[u8]) {
    if let Some((parent, _)) = path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
        c.mkdir(parent, &zk::CreateMode::Persistent.with_acls(acl())).await.expect("mkdir");
    }
    match c.create(path, data, &zk::CreateMode::Persistent.with_acls(acl())).await {
        Ok(_) => {}
        Err(zk::Error::NodeExists) => {
            c.set_data(path, data, None).await.expect("set");
        }
        Err(e) => panic!("create {path}: {e}"),
    }
}

/// Plays a sidecar that runs `service` at `version` on `host`: an ephemeral
/// `current` node owned by `c`'s session (replaced if present).
pub async fn online(c: &zk::Client, l: &Layout, service: &str, host: &str, version: &str) {
    let path = l.current_host(service, host);
    c.mkdir(&l.current_service(service), &zk::CreateMode::Persistent.with_acls(acl())).await.expect("mkdir");
    let _ = c.delete(&path, None).await;
    let payload = Current {
        host: host.into(),
        service: service.into(),
        version: version.into(),
        state: "online".into(),
        pid: None,
        since: znode_schema::time::now(),
        sidecar: "test".into(),
        last_error: None,
        report: None,
    };
    c.create(&path, &encode(&payload), &zk::CreateMode::Ephemeral.with_acls(acl())).await.expect("create current");
}

/// A ticket of `host` (ephemeral sequential); returns its path.
pub async fn ticket(c: &zk::Client, l: &Layout, service: &str, host: &str, version: &str) -> String {
    let t = Ticket { host: host.into(), version: version.into(), at: znode_schema::time::now() };
    let opts = zk::CreateMode::EphemeralSequential.with_acls(acl());
    let (_, seq) = c.create(&l.ticket_prefix(service, host), &encode(&t), &opts).await.expect("create ticket");
    format!("{}{seq}", l.ticket_prefix(service, host))
}

/// An upgrading marker of `host` under the deploy entry at `entry_path`.
pub async fn marker(c: &zk::Client, entry_path: &str, host: &str, from: &str, to: &str) -> String {
    let m = Upgrading {
        host: host.into(),
        service: None,
        from: Some(from.into()),
        to: to.into(),
        since: znode_schema::time::now(),
    };
    let path = format!("{entry_path}/upgrading/{host}");
    put(c, &path, &encode(&m)).await;
    path
}

/// The deploy entries under `l`, head first, as (path, payload JSON).
pub async fn deploy_entries(c: &zk::Client, l: &Layout) -> Vec<(String, String)> {
    let names = c.list_children(&l.deploy_dir()).await.unwrap_or_default();
    let mut out = Vec::new();
    for d in znode_schema::seq::sorted_deploys(&names) {
        let path = l.deploy_entry(&d);
        if let Ok((data, _)) = c.get_data(&path).await {
            out.push((path, String::from_utf8_lossy(&data).into_owned()));
        }
    }
    out
}

/// History event payloads of `service`, oldest first.
pub async fn history(c: &zk::Client, l: &Layout, service: &str) -> Vec<String> {
    let mut names = c.list_children(&l.history(service)).await.unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if let Ok((data, _)) = c.get_data(&l.history_event(service, &n)).await {
            out.push(String::from_utf8_lossy(&data).into_owned());
        }
    }
    out
}

/// A fake sha256 made of one repeated hex digit.
pub fn sha(digit: char) -> String {
    std::iter::repeat_n(digit, 64).collect()
}

/// `s` as JSON; panics naming it when it is not.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The znode at `path` as JSON; panics when it cannot be read.
pub async fn get(c: &zk::Client, path: &str) -> serde_json::Value {
    let (data, _) = c.get_data(path).await.unwrap_or_else(|e| panic!("read {path}: {e}"));
    json(std::str::from_utf8(&data).unwrap())
}

/// Runs a command expected to be refused by state: exit 3, `message` on stderr, and
/// nothing written under the root.
pub async fn refused(ctl: &Ctl, c: &zk::Client, args: &[&str], message: &str) {
    let before = snapshot(c, &ctl.root).await;
    let r = ctl.run(args).await;
    assert_eq!(r.code, 3, "{args:?} exits 3: {r:?}");
    assert!(r.stderr.contains(message), "{args:?}: stderr {:?} should contain {message:?}", r.stderr);
    assert_eq!(snapshot(c, &ctl.root).await, before, "{args:?} wrote nothing");
}

/// Plays the last sidecar of `service`'s rollouts: deletes its deploy entries (and
/// their markers' directories).
pub async fn finish_rollouts(c: &zk::Client, ctl: &Ctl, service: &str) {
    for (path, payload) in deploy_entries(c, &ctl.layout).await {
        if json(&payload)["service"] == service {
            let _ = c.delete(&format!("{path}/upgrading"), None).await;
            c.delete(&path, None).await.unwrap();
        }
    }
}
