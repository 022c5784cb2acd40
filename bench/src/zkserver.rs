//! A standalone ZooKeeper for the benchmarks, configured for many clients.
//!
//! The test harness's launcher (`baton_tests::ZkCluster`) keeps ZooKeeper's default
//! `maxClientCnxns = 60` connections per client address, and every benchmark host
//! connects from 127.0.0.1: past 60 hosts, connections time out. This launcher
//! lifts that limit and gives the JVM more heap; the rest is as in the harness
//! (Debian's package or `ZOOKEEPER_HOME`, `java` on `PATH`, the process tied to
//! this program's life). The transaction log is fsynced as in production.

use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running standalone server; killed when dropped.
#[derive(Debug)]
pub struct ZkServer {
    /// The client port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ZkServer {
    /// Where the server keeps its data (and its transaction log).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Starts a server and waits until it serves (blocking).
    pub fn start() -> anyhow::Result<ZkServer> {
        let dir = tempfile::Builder::new().prefix("baton-bench-zk-").tempdir()?;
        let port = baton_tests::zk::free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n\
                 admin.enableServer=false\n4lw.commands.whitelist=*\nmaxSessionTimeout=20000\n",
                data.display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("zk.log"))?;
        let mut cmd = Command::new("java");
        cmd.args(["-Xmx1g", "-XX:+UseSerialGC", "-Dzookeeper.admin.enableServer=false"])
            .arg(format!("-Dzookeeper.log.dir={}", dir.path().display()))
            .args(["-cp", &classpath()?, "org.apache.zookeeper.server.quorum.QuorumPeerMain"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = baton_tests::process::spawn_tied(cmd).context("start java for ZooKeeper (is java on PATH?)")?;
        let server = ZkServer { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !crate::zkstat::four_letter(port, "ruok").is_ok_and(|r| r == "imok")
            || crate::zkstat::four_letter(port, "srvr").map_or(true, |r| r.contains("not currently serving"))
        {
            anyhow::ensure!(Instant::now() < deadline, "ZooKeeper did not serve within 90 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// The server's process id (the JVM's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:<port>`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ZooKeeper's jars: `$ZOOKEEPER_HOME` or Debian's package.
fn classpath() -> anyhow::Result<String> {
    if let Ok(home) = std::env::var("ZOOKEEPER_HOME") {
        return Ok(format!("{0}/conf:{0}/lib/*:{0}/*", home));
    }
    anyhow::ensure!(
        PathBuf::from("/usr/share/java/zookeeper.jar").exists(),
        "Apache ZooKeeper not found: set ZOOKEEPER_HOME or `apt-get install zookeeper`"
    );
    let wanted = ["zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple", "commons-cli", "commons-io"];
    let mut cp = vec!["/etc/zookeeper/conf".to_string()];
    cp.extend(wanted.iter().map(|j| format!("/usr/share/java/{j}.jar")));
    let mut netty: Vec<String> = std::fs::read_dir("/usr/share/java")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("netty-") && !n.contains("-4.") && !n.starts_with("netty-all"))
        .map(|n| format!("/usr/share/java/{n}"))
        .collect();
    netty.sort();
    cp.extend(netty);
    Ok(cp.join(":"))
}
