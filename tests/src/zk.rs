//! A real Apache ZooKeeper for tests: standalone or an ensemble, on free loopback
//! ports with temporary data directories.
//!
//! ZooKeeper is found through `ZOOKEEPER_HOME` (a release tarball: `lib/*.jar`) or
//! the Debian package (`/usr/share/java/zookeeper.jar`); `java` must be on `PATH`.
//! Members are child processes tied to the test binary (see [`crate::process`]):
//! dropping the cluster kills them, and so does the binary's exit, even after a panic.

use crate::process::spawn_tied;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The tick time of test servers. Session timeouts are clamped to [2, 20] ticks,
/// so tests may use sessions from 1 s to 10 s.
pub const TICK_MS: u64 = 500;

const START_PATIENCE: Duration = Duration::from_secs(90);

/// How to launch ZooKeeper on this machine.
#[derive(Debug, Clone)]
struct Install {
    classpath: String,
    java: PathBuf,
}

fn find_install() -> Result<Install, String> {
    let java = which("java").ok_or_else(|| {
        "java not found on PATH; install ZooKeeper and a JRE: `apt-get install zookeeper` \
         (or run scripts/setup.sh)"
            .to_string()
    })?;
    if let Ok(home) = std::env::var("ZOOKEEPER_HOME") {
        let home = PathBuf::from(home);
        if home.join("lib").is_dir() {
            let cp = format!("{0}/conf:{0}/lib/*:{0}/*", home.display());
            return Ok(Install { classpath: cp, java });
        }
        return Err(format!("ZOOKEEPER_HOME={} has no lib/ directory", home.display()));
    }
    if Path::new("/usr/share/java/zookeeper.jar").exists() {
        return Ok(Install { classpath: debian_classpath(), java });
    }
    Err("Apache ZooKeeper not found: set ZOOKEEPER_HOME to an unpacked release, or install \
         Debian's package: `apt-get update && apt-get install -y zookeeper` (scripts/setup.sh does this)"
        .into())
}

/// The Debian package's jars, without the many unrelated jars of /usr/share/java.
fn debian_classpath() -> String {
    let wanted = ["zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple", "commons-cli", "commons-io"];
    let mut cp = vec!["/etc/zookeeper/conf".to_string()];
    cp.extend(wanted.iter().map(|j| format!("/usr/share/java/{j}.jar")));
    if let Ok(dir) = std::fs::read_dir("/usr/share/java") {
        let mut netty: Vec<_> = dir
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("netty-") && !n.contains("-4.") && !n.starts_with("netty-all"))
            .map(|n| format!("/usr/share/java/{n}"))
            .collect();
        netty.sort();
        cp.extend(netty);
    }
    cp.join(":")
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(cmd)).find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by
    // default): a port the kernel hands out with bind(0) may be taken again by any
    // outgoing connection between this check and the server's own bind. Ports are
    // handed out in turn from a counter that every test process of the machine
    // shares (a file under the temporary directory, under `flock`), so two tests
    // running at once never get the same one until the range wraps; each must also
    // bind right now.
    use std::io::{Read, Seek, Write};
    let (low, high) = ephemeral_range();
    let (from, to) = if low > 11_000 { (10_000u16, low - 1) } else { (high.saturating_add(1).max(1024), u16::MAX) };
    let path = std::env::temp_dir().join("baton-test-ports");
    let counter = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
    let locked = counter.ok().and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok());
    if let Some(mut file) = locked {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let mut next = text.trim().parse::<u16>().ok().filter(|p| (from..=to).contains(p)).unwrap_or(from);
        for _ in 0..2000 {
            let port = next;
            next = if next >= to { from } else { next + 1 };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "{next}"));
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// The kernel's ephemeral port range.
fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = text.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (parts.next(), parts.next()) {
        (Some(low), Some(high)) if low <= high => (low, high),
        _ => (32768, 60999),
    }
}

/// What a test server needs beyond the defaults (see [`ZkCluster::standalone_with`]).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Serve TLS on a `secureClientPort` (Netty, PEM stores, `ssl.clientAuth=need`,
    /// x509 authentication) besides the plain client port.
    pub tls: Option<ServerTls>,
    /// More `zoo.cfg` lines (`authProvider.N=…`, ...).
    pub extra_config: String,
    /// More JVM arguments (`-Dzookeeper.DigestAuthenticationProvider.superDigest=…`).
    pub jvm_args: Vec<String>,
}

/// The server side of TLS: PEM files (their names must end in `.pem`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's PKCS#8 key followed by its certificate.
    pub keystore: PathBuf,
    /// The CA certificate that signed the clients' certificates.
    pub truststore: PathBuf,
}

/// One ZooKeeper server of a cluster.
#[derive(Debug)]
pub struct Member {
    /// The server id (`myid`), from 1.
    pub id: u32,
    /// The client port.
    pub client_port: u16,
    /// The address it serves on (127.0.0.1 unless [placed](ZkCluster::placed)).
    pub host: String,
    /// The command prefix it is started with (e.g. `ip netns exec NS`), often empty.
    prefix: Vec<String>,
    /// The TLS client port (`secureClientPort`), when the server serves TLS.
    pub secure_port: Option<u16>,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Member {
    /// `<host>:<client port>`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    /// `127.0.0.1:<secure port>`, when the server serves TLS.
    pub fn secure_address(&self) -> Option<String> {
        self.secure_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap();
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Where a member runs when it is not on loopback: the address it binds (client
/// port 2181, quorum ports 2888 and 3888) and the command prefix that starts it
/// there (`ip netns exec NS`, see [`crate::netns`]).
#[derive(Debug, Clone)]
pub struct Placement {
    /// The address the member binds and is reached at.
    pub address: String,
    /// The command prefix (program and arguments) before `java`.
    pub prefix: Vec<String>,
}

/// A running ZooKeeper: one standalone server or an ensemble.
#[derive(Debug)]
pub struct ZkCluster {
    install: Install,
    members: Vec<Member>,
    jvm_args: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl ZkCluster {
    /// Starts a standalone server and waits until it serves.
    pub fn standalone() -> Self {
        Self::start_new(1)
    }

    /// Starts an ensemble of `n` servers (3 for failover tests) and waits until it
    /// has a leader and every member serves.
    pub fn ensemble(n: usize) -> Self {
        assert!(n >= 3 && n % 2 == 1, "an ensemble needs an odd number of servers, at least 3");
        Self::start_new(n)
    }

    /// Starts a standalone server with `options` (TLS, authentication providers) and
    /// waits until it serves on its plain port.
    pub fn standalone_with(options: ServerOptions) -> Self {
        Self::start_with(1, options)
    }

    fn start_new(n: usize) -> Self {
        let loopback = Placement { address: "127.0.0.1".into(), prefix: vec![] };
        let ports: Vec<(u16, u16, u16)> = (0..n).map(|_| (free_port(), free_port(), free_port())).collect();
        Self::start_at(vec![loopback; n], ports, ServerOptions::default())
    }

    fn start_with(n: usize, options: ServerOptions) -> Self {
        let loopback = Placement { address: "127.0.0.1".into(), prefix: vec![] };
        let ports: Vec<(u16, u16, u16)> = (0..n).map(|_| (free_port(), free_port(), free_port())).collect();
        Self::start_at(vec![loopback; n], ports, options)
    }

    /// Starts one member per placement (one: standalone; three or more: an
    /// ensemble), each on ports 2181, 2888 and 3888 of its own address, and waits
    /// until they serve.
    pub fn placed(placements: Vec<Placement>) -> Self {
        let n = placements.len();
        assert!(n == 1 || (n >= 3 && n % 2 == 1), "one server or an odd number of at least 3");
        Self::start_at(placements, vec![(2181, 2888, 3888); n], ServerOptions::default())
    }

    fn start_at(placements: Vec<Placement>, ports: Vec<(u16, u16, u16)>, options: ServerOptions) -> Self {
        let n = placements.len();
        let install = find_install().unwrap_or_else(|e| panic!("{e}"));
        let tmp = tempfile::Builder::new().prefix("baton-zk-").tempdir().expect("temporary directory");
        let servers: String = if n == 1 {
            String::new()
        } else {
            ports
                .iter()
                .zip(&placements)
                .enumerate()
                .map(|(i, ((_, q, e), p))| format!("server.{}={}:{q}:{e}\n", i + 1, p.address))
                .collect()
        };
        let members = ports
            .iter()
            .zip(placements)
            .enumerate()
            .map(|(i, ((client, _, _), place))| {
                let id = i as u32 + 1;
                let secure_port = options.tls.as_ref().map(|_| free_port());
                let tls = match (&options.tls, secure_port) {
                    (Some(t), Some(port)) => format!(
                        "secureClientPort={port}\nserverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
                         ssl.keyStore.location={}\nssl.trustStore.location={}\nssl.clientAuth=need\n\
                         authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider\n",
                        t.keystore.display(),
                        t.truststore.display()
                    ),
                    _ => String::new(),
                };
                let dir = tmp.path().join(format!("zk{id}"));
                std::fs::create_dir_all(dir.join("data")).unwrap();
                std::fs::write(dir.join("data/myid"), format!("{id}\n")).unwrap();
                let cfg = format!(
                    "tickTime={TICK_MS}\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={client}\n\
                     clientPortAddress={host}\nadmin.enableServer=false\n4lw.commands.whitelist=*\n\
                     maxSessionTimeout=20000\n{servers}{tls}{}",
                    dir.join("data").display(),
                    options.extra_config,
                    host = place.address,
                );
                std::fs::write(dir.join("zoo.cfg"), cfg).unwrap();
                Member {
                    id,
                    client_port: *client,
                    secure_port,
                    host: place.address,
                    prefix: place.prefix,
                    dir,
                    child: Mutex::new(None),
                }
            })
            .collect();
        let cluster = ZkCluster { install, members, jvm_args: options.jvm_args, _tmp: tmp };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_serving();
        cluster
    }

    fn spawn(&self, i: usize) {
        let m = &self.members[i];
        let mut slot = m.child.lock().unwrap();
        assert!(slot.is_none(), "member {} is already running", m.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(m.dir.join("zk.log")).unwrap();
        let mut cmd = match m.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.install.java);
                c
            }
            None => Command::new(&self.install.java),
        };
        cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"])
            .arg(format!("-Dzookeeper.log.dir={}", m.dir.display()))
            .arg("-Dzookeeper.admin.enableServer=false")
            .args(&self.jvm_args)
            .args(["-cp", &self.install.classpath, "org.apache.zookeeper.server.quorum.QuorumPeerMain"])
            .arg(m.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        *slot = Some(spawn_tied(cmd).expect("start java for ZooKeeper"));
    }

    /// The members, in id order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The connect string of every member: `127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn connect_string(&self) -> String {
        self.members.iter().map(Member::address).collect::<Vec<_>>().join(",")
    }

    /// The TLS connect string of every member (`127.0.0.1:<secure port>,...`); empty
    /// when the cluster serves no TLS.
    pub fn secure_connect_string(&self) -> String {
        self.members.iter().filter_map(Member::secure_address).collect::<Vec<_>>().join(",")
    }

    /// Member `i`'s server log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.members[i].dir.join("zk.log")).unwrap_or_default()
    }

    /// Kills member `i` with SIGKILL (a crash).
    pub fn kill(&self, i: usize) {
        if let Some(mut c) = self.members[i].child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops member `i` with SIGTERM and waits for it to exit.
    pub fn stop(&self, i: usize) {
        if let Some(mut c) = self.members[i].child.lock().unwrap().take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again (after [`stop`](Self::stop) or [`kill`](Self::kill)) and
    /// waits until it serves.
    pub fn restart(&self, i: usize) {
        self.spawn(i);
        let what = format!("ZooKeeper member {} to serve again", self.members[i].id);
        crate::eventually(&what, START_PATIENCE, || self.mode(i).filter(|m| m != "none"));
    }

    /// Starts member `i` again without waiting for it to serve: a member of a stopped
    /// ensemble serves only once a quorum is back (then [`wait_serving`](Self::wait_serving)).
    pub fn start_member(&self, i: usize) {
        self.spawn(i);
    }

    /// The `Mode:` line of `srvr` for member `i`: `standalone`, `leader`, `follower`;
    /// `None` when it does not answer or does not serve.
    pub fn mode(&self, i: usize) -> Option<String> {
        let reply = four_letter(&self.members[i], "srvr")?;
        reply.lines().find_map(|l| l.strip_prefix("Mode: ")).map(|m| m.trim().to_string())
    }

    /// The index of the current leader (`None` for a standalone server or no leader).
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.mode(i).as_deref() == Some("leader"))
    }

    /// Waits until every running member serves and, in an ensemble, one leads.
    pub fn wait_serving(&self) {
        let what =
            format!("ZooKeeper ({} members) to serve; logs under {}", self.members.len(), self._tmp.path().display());
        crate::eventually(&what, START_PATIENCE, || {
            for (i, m) in self.members.iter().enumerate() {
                if !m.is_running() {
                    if m.child.lock().unwrap().is_some() {
                        let log = std::fs::read_to_string(m.dir.join("zk.log")).unwrap_or_default();
                        panic!("ZooKeeper member {} exited during start-up:\n{log}", m.id);
                    }
                    continue;
                }
                self.mode(i)?;
            }
            (self.members.len() == 1 || self.leader().is_some()).then_some(())
        });
    }

    /// The data directory of member `i` (its transaction logs are under `version-2/`).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].dir.join("data")
    }

    /// The data directories of every member.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        (0..self.members.len()).map(|i| self.data_dir(i)).collect()
    }

    /// Sends a four-letter command to member `i` and returns the reply.
    pub fn four_letter(&self, i: usize, cmd: &str) -> Option<String> {
        four_letter(&self.members[i], cmd)
    }
}

impl Drop for ZkCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn four_letter(m: &Member, cmd: &str) -> Option<String> {
    let ip: std::net::IpAddr = m.host.parse().ok()?;
    let addr = SocketAddr::new(ip, m.client_port);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty() && !out.contains("not currently serving")).then_some(out)
}

/// One standalone server shared by every test of this test binary (started on
/// first use, killed when the binary exits). Tests keep apart by [`unique_root`].
pub fn shared_server() -> &'static ZkCluster {
    static SERVER: OnceLock<ZkCluster> = OnceLock::new();
    SERVER.get_or_init(ZkCluster::standalone)
}

/// A root path no other test of any binary uses: `/t-<name>-<pid>-<n>`.
pub fn unique_root(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("/t-{name}-{}-{n}", std::process::id())
}
