//! The sidecar upgrading itself (SPEC, "Upgrading the sidecar itself"): the built-in
//! service `baton-sidecar`, its step (a handover from the running image to the new
//! one), and the launcher that runs the active sidecar release when the installed
//! binary starts.
//!
//! # The handover
//! The old image (fenced, its step in flight) checks the new binary runs
//! (`--version`), listens on `<data_dir>/baton-sidecar/handover.sock` and starts the
//! new binary with `--take-over SOCKET`. The new image connects to ZooKeeper, then
//! says `ready`. Until then the old image supervises everything as before; a binary
//! that exits, hangs or cannot connect within the health deadline is killed and the
//! step fails there (counted like any failed step; nothing was touched).
//!
//! On `ready` the old image stops its agents at their safe points, detaches from the
//! services (they run on, untouched), closes its listeners, releases the data-dir
//! lock and says `go`. The new image takes the lock, opens its session, takes over
//! every ephemeral node of this host (registrations, tickets) in one transaction per
//! node ([`crate::coord::register`]), adopts the services through their pid files,
//! finds the step's marker, bakes, activates its release and commits the step. Only
//! then it says `done`; the old image tells systemd the new main pid, closes its own
//! session (none of its nodes is left) and exits.
//!
//! When the new image dies or stalls after `go`, the old image kills it, records the
//! failure in `handover.json` and executes itself again: the fresh image takes the
//! nodes back, adopts the services, and its recovery counts the failure
//! ([`failed_attempt`]). When the old image dies after `go`, the new one exits too
//! (before `done` it is nobody's main process); systemd starts the unit again and the
//! restarted sidecar recovers the step. The crash table is in docs/self-upgrade.md.
//!
//! # The launcher
//! systemd starts the installed binary. [`launch`] executes the release active in
//! `<data_dir>/baton-sidecar/` instead, when there is one, so an upgrade survives
//! restarts; a release that was started [`MAX_STARTS`] times without staying up for
//! [`PROVEN_AFTER`] is given up for the previous one (never a restart loop on a
//! broken binary).

use crate::host::releases::ReleaseStore;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use znode_schema::SIDECAR_SERVICE;

/// Set in the environment of an image the launcher or a handover started: the
/// launcher does not redirect it again.
pub const LAUNCHED: &str = "BATON_SIDECAR_LAUNCHED";

/// Starts of one release without staying up before the launcher gives it up.
pub const MAX_STARTS: u32 = 3;

/// How long an image must stay up (with a live session) to count as working.
pub const PROVEN_AFTER: Duration = Duration::from_secs(30);

/// How long a `--version` check may take.
const VERSION_CHECK: Duration = Duration::from_secs(10);

/// `<data_dir>/baton-sidecar`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SIDECAR_SERVICE)
}

/// The release this process runs: the version the launcher or the old image started
/// it as (`BATON_SIDECAR_LAUNCHED`), else the version of the sidecar release directory
/// its binary lies in, else (the installed binary) the version it was built as.
pub fn own_release(data_dir: &Path) -> String {
    let launched = std::env::var(LAUNCHED).ok().filter(|v| znode_schema::validate_version(v).is_ok());
    let exe = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    let releases = dir(data_dir).join("releases").canonicalize().ok();
    let from_path = || {
        let (exe, releases) = exe.zip(releases)?;
        let rest = exe.strip_prefix(&releases).ok()?;
        let v = rest.components().next()?.as_os_str().to_str()?.to_string();
        znode_schema::validate_version(&v).is_ok().then_some(v)
    };
    launched.or_else(from_path).unwrap_or_else(|| crate::VERSION.to_string())
}

/// The sidecar binary of an installed release: `sidecar` or `bin/sidecar`, or the
/// one file of a single-file artifact (named after its URL).
pub fn binary_in(release_dir: &Path) -> Option<PathBuf> {
    for name in ["sidecar", "bin/sidecar"] {
        let p = release_dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    let files: Vec<PathBuf> = std::fs::read_dir(release_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    match files.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// How often a release was started by the launcher without proving itself.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Starts {
    version: String,
    starts: u32,
}

fn starts_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("launches.json")
}

fn read_starts(data_dir: &Path) -> Starts {
    std::fs::read(starts_path(data_dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn write_starts(data_dir: &Path, s: &Starts) {
    let path = starts_path(data_dir);
    let tmp = dir(data_dir).join("launches.json.tmp");
    let json = serde_json::to_vec(s).unwrap_or_default();
    if let Err(err) = crate::safefs::write_atomic(&path, &tmp, &json, true) {
        tracing::warn!(path = %path.display(), error = %err, "failed to record the sidecar's starts");
    }
}

/// Called once this image has stayed up with a live session for [`PROVEN_AFTER`]:
/// its release is known to work, its start count is cleared.
pub fn proven(data_dir: &Path, version: &str) {
    let s = read_starts(data_dir);
    if s.version == version && s.starts > 0 {
        write_starts(data_dir, &Starts { version: version.into(), starts: 0 });
    }
}

/// The launcher: when the installed binary starts and a sidecar release is active,
/// executes that release's binary with the same arguments (returns only when there is
/// nothing to execute, or executing failed: then this binary runs). A release started
/// [`MAX_STARTS`] times in a row without proving itself is given up: the previous
/// release (or this installed binary) runs instead, and the give-up is logged.
pub fn launch(data_dir: &Path) {
    if std::env::var_os(LAUNCHED).is_some() {
        return;
    }
    let Ok(store) = ReleaseStore::open(data_dir, SIDECAR_SERVICE) else { return };
    let Ok(mut state) = store.state() else { return };
    let Some(mut version) = state.active.clone() else { return };
    let mut starts = read_starts(data_dir);
    if starts.version == version && starts.starts >= MAX_STARTS {
        tracing::error!(
            %version,
            starts = starts.starts,
            "sidecar release {version} was started {} times and never stayed up: giving it up",
            starts.starts
        );
        let fallback = state.previous.clone().filter(|p| store.has(p) && binary_in(&store.release_dir(p)).is_some());
        state = match &fallback {
            Some(p) => store.activate(p),
            None => store.deactivate(),
        }
        .unwrap_or(state);
        write_starts(data_dir, &Starts::default());
        match state.active.clone() {
            Some(v) => version = v,
            None => return,
        }
        starts = Starts::default();
    }
    let Some(binary) = binary_in(&store.release_dir(&version)) else {
        tracing::error!(%version, "the active sidecar release holds no sidecar binary; running the installed one");
        return;
    };
    let me = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    if binary.canonicalize().ok() == me {
        return;
    }
    let n = if starts.version == version { starts.starts + 1 } else { 1 };
    write_starts(data_dir, &Starts { version: version.clone(), starts: n });
    tracing::info!(%version, binary = %binary.display(), "running the active sidecar release");
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&binary).args(std::env::args_os().skip(1)).env(LAUNCHED, &version).exec();
    tracing::error!(binary = %binary.display(), error = %err, "failed to run the active sidecar release; running the installed binary");
}

/// Executes this image again (same pid: systemd sees nothing), after a handover
/// failed past `go`. Returns only if that failed.
pub fn restart_self() -> io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let own = std::env::var_os(LAUNCHED).unwrap_or_else(|| crate::VERSION.into());
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let args = strip_take_over(args);
    std::process::Command::new(exe).args(args).env(LAUNCHED, own).exec()
}

/// The arguments without `--take-over SOCKET` (an image restarting itself is no
/// successor any more).
fn strip_take_over(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--take-over" {
            it.next();
            continue;
        }
        if a.to_str().is_some_and(|s| s.starts_with("--take-over=")) {
            continue;
        }
        out.push(a);
    }
    out
}

/// A failed handover, recorded for the image that recovers the step.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Failed {
    to: String,
    cause: String,
}

fn failed_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("handover.json")
}

/// Records that the handover to `to` failed with `cause`.
pub fn record_failure(data_dir: &Path, to: &str, cause: &str) {
    let path = failed_path(data_dir);
    let tmp = dir(data_dir).join("handover.json.tmp");
    let json = serde_json::to_vec(&Failed { to: to.into(), cause: cause.into() }).unwrap_or_default();
    if let Err(err) = crate::safefs::write_atomic(&path, &tmp, &json, true) {
        tracing::error!(path = %path.display(), error = %err, "failed to record the failed handover");
    }
}

/// The cause of a failed handover to `to`, if one was recorded.
pub fn failed_attempt(data_dir: &Path, to: &str) -> Option<String> {
    let f: Failed = serde_json::from_slice(&std::fs::read(failed_path(data_dir)).ok()?).ok()?;
    (f.to == to).then_some(f.cause)
}

/// Forgets a recorded failure (its step was committed).
pub fn forget_failure(data_dir: &Path) {
    let _ = std::fs::remove_file(failed_path(data_dir));
}

/// Whether the machine booted since the sidecar last started here (the kernel's boot
/// id differs from the one recorded in the data dir, or none was recorded: a new
/// machine). Records the current boot id.
pub fn machine_booted(data_dir: &Path) -> bool {
    let now = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let path = dir(data_dir).join("boot-id");
    let before = std::fs::read_to_string(&path).unwrap_or_default();
    if before.trim() == now.trim() && !now.trim().is_empty() {
        return false;
    }
    let tmp = dir(data_dir).join("boot-id.tmp");
    if let Err(err) = crate::safefs::write_atomic(&path, &tmp, now.as_bytes(), false) {
        tracing::warn!(path = %path.display(), error = %err, "failed to record the boot id");
    }
    true
}

/// The handover socket's path.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("handover.sock")
}

/// The new image, started by the old one, connected and ready to take over.
#[derive(Debug)]
pub struct Successor {
    child: tokio::process::Child,
    lines: BufReader<UnixStream>,
    /// The new image's pid.
    pub pid: u32,
    /// The release it runs.
    pub to: String,
}

/// Checks `binary` runs (`--version`), starts it in take-over mode and waits, at most
/// `deadline`, for it to connect to ZooKeeper and say `ready`. An error says what
/// failed; the binary is not left running.
pub async fn start_successor(
    data_dir: &Path,
    binary: &Path,
    to: &str,
    deadline: Duration,
) -> Result<Successor, String> {
    let shown = binary.display();
    let check = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(VERSION_CHECK, check).await {
        Err(_) => return Err(format!("{shown} --version did not answer within {VERSION_CHECK:?}")),
        Ok(Err(e)) => return Err(format!("{shown} does not run: {e}")),
        Ok(Ok(out)) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("{shown} --version failed ({}): {}", out.status, stderr.trim()));
        }
        Ok(Ok(_)) => {}
    }
    // The same arguments as this image (config, log format), plus the socket.
    let args = strip_take_over(std::env::args_os().skip(1).collect());
    let sock = socket_path(data_dir);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| format!("failed to listen on {}: {e}", sock.display()))?;
    let mut child = tokio::process::Command::new(binary)
        .args(args)
        .arg("--take-over")
        .arg(&sock)
        .env(LAUNCHED, to)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to start {shown}: {e}"))?;
    let pid = child.id().unwrap_or_default();
    tracing::info!(pid, binary = %shown, version = to, "new sidecar image started; waiting for it to connect");
    let until = tokio::time::Instant::now() + deadline;
    let ready = async {
        let (stream, _) = listener.accept().await.map_err(|e| format!("handover socket: {e}"))?;
        let peer = stream.peer_cred().ok().and_then(|c| c.pid()).map(|p| p as u32);
        if peer != Some(pid) {
            return Err(format!("a process other than the new image (pid {peer:?}) connected to the handover socket"));
        }
        let mut lines = BufReader::new(stream);
        let mut line = String::new();
        lines.read_line(&mut line).await.map_err(|e| format!("handover socket: {e}"))?;
        match line.trim() {
            "ready" => Ok(lines),
            "" => Err("the new image closed the handover socket before it was ready".to_string()),
            other => Err(format!("the new image said {other:?} instead of ready")),
        }
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout_at(until, ready) => r.unwrap_or_else(|_| Err(format!(
            "the new image did not connect to zookeeper and report ready within the health deadline ({deadline:?})"
        ))),
        status = child.wait() => Err(match status {
            Ok(s) => format!("the new image exited before it was ready ({s})"),
            Err(e) => format!("the new image could not be waited for: {e}"),
        }),
    };
    let _ = std::fs::remove_file(&sock);
    match outcome {
        Ok(lines) => Ok(Successor { child, lines, pid, to: to.into() }),
        Err(why) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(why)
        }
    }
}

impl Successor {
    /// Tells the new image to take over.
    pub async fn go(&mut self) -> Result<(), String> {
        let w = self.lines.get_mut();
        w.write_all(b"go\n").await.map_err(|e| format!("the new image went away before go: {e}"))
    }

    /// Waits, at most `within`, for the new image to say `done` (it took over and
    /// committed its step).
    pub async fn done(&mut self, within: Duration) -> Result<(), String> {
        let mut line = String::new();
        let read = tokio::time::timeout(within, self.lines.read_line(&mut line));
        tokio::select! {
            r = read => match r {
                Err(_) => Err(format!("the new image did not take over within {within:?}")),
                Ok(Err(e)) => Err(format!("handover socket: {e}")),
                Ok(Ok(_)) if line.trim() == "done" => Ok(()),
                Ok(Ok(_)) => Err("the new image went away while taking over".to_string()),
            },
            status = self.child.wait() => Err(match status {
                Ok(s) => format!("the new image exited while taking over ({s})"),
                Err(e) => format!("the new image could not be waited for: {e}"),
            }),
        }
    }

    /// Kills the new image (after a failed take-over) and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A ready new image and how long it may take to take over and commit its step.
#[derive(Debug)]
pub struct Offer {
    /// The new image.
    pub successor: Successor,
    /// Its time to say `done` after `go` (the health deadline and the bake).
    pub within: Duration,
}

/// This sidecar as a service of its own, shared by its agents: the release it runs,
/// the new image its step offers to the daemon, and the old image it takes over from.
#[derive(Debug)]
pub struct SelfImage {
    data_dir: PathBuf,
    own: String,
    predecessor: Option<std::sync::Arc<Predecessor>>,
    offer: Mutex<Option<Offer>>,
    offered: tokio::sync::watch::Sender<bool>,
}

impl SelfImage {
    /// This process's image; `predecessor` when it was started to take over.
    pub fn new(data_dir: &Path, predecessor: Option<std::sync::Arc<Predecessor>>) -> Self {
        SelfImage {
            data_dir: data_dir.into(),
            own: own_release(data_dir),
            predecessor,
            offer: Mutex::new(None),
            offered: tokio::sync::watch::channel(false).0,
        }
    }

    /// The release this process runs.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// Whether this image was started to take over from an old one.
    pub fn is_successor(&self) -> bool {
        self.predecessor.is_some()
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The step offers a ready new image: the daemon stops the agents and hands over.
    pub fn offer(&self, offer: Offer) {
        *self.offer.lock().unwrap_or_else(|e| e.into_inner()) = Some(offer);
        self.offered.send_replace(true);
    }

    /// Turns true when a new image is offered.
    pub fn offered(&self) -> tokio::sync::watch::Receiver<bool> {
        self.offered.subscribe()
    }

    /// The offered new image, once.
    pub fn take_offer(&self) -> Option<Offer> {
        self.offer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// How many agents run (the new image says `done` once each took up a session).
    pub fn expect_agents(&self, n: usize) {
        if let Some(p) = &self.predecessor {
            p.expect_agents(n);
        }
    }

    /// An agent took up its first session.
    pub fn begun(&self) {
        if let Some(p) = &self.predecessor {
            p.begun();
        }
    }

    /// This image registered at its version (the step committed, or boot): the old
    /// image, if any, may go.
    pub async fn took_over(&self) {
        if let Some(p) = &self.predecessor {
            p.done().await;
        }
    }
}

/// The old image, as the new one sees it during a take-over.
#[derive(Debug)]
pub struct Predecessor {
    stream: tokio::sync::Mutex<Option<UnixStream>>,
    begun: AtomicUsize,
    agents: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Predecessor {
    /// Connects to the old image's handover socket.
    pub async fn connect(sock: &Path) -> io::Result<Predecessor> {
        let stream = UnixStream::connect(sock).await?;
        Ok(Predecessor {
            stream: tokio::sync::Mutex::new(Some(stream)),
            begun: AtomicUsize::new(0),
            agents: AtomicUsize::new(usize::MAX),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Says `ready` and waits for `go`. An error: the old image went away first
    /// (it keeps, or got back, everything; this image must not touch anything).
    pub async fn ready_then_go(&self) -> Result<(), String> {
        let mut guard = self.stream.lock().await;
        let stream = guard.as_mut().ok_or("the handover is over")?;
        stream.write_all(b"ready\n").await.map_err(|e| format!("the old sidecar went away: {e}"))?;
        let mut buf = [0u8; 3];
        let mut got = 0;
        while got < buf.len() {
            let n = tokio::io::AsyncReadExt::read(stream, &mut buf[got..])
                .await
                .map_err(|e| format!("the old sidecar went away: {e}"))?;
            if n == 0 {
                return Err("the old sidecar went away before saying go".into());
            }
            got += n;
        }
        match &buf {
            b"go\n" => Ok(()),
            other => Err(format!("the old sidecar said {:?} instead of go", String::from_utf8_lossy(other))),
        }
    }

    /// How many agents must take up their first session before `done`.
    pub fn expect_agents(&self, n: usize) {
        self.agents.store(n, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// An agent took up its first session: this host's nodes of its service are ours.
    pub fn begun(&self) {
        self.begun.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether every agent took up its first session.
    fn all_begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst) >= self.agents.load(Ordering::SeqCst)
    }

    /// Once every agent took up its first session, says `done`: the old image exits.
    /// Idempotent.
    pub async fn done(&self) {
        loop {
            let changed = self.changed.notified();
            if self.all_begun() {
                break;
            }
            changed.await;
        }
        let Some(mut stream) = self.stream.lock().await.take() else { return };
        match stream.write_all(b"done\n").await {
            Ok(()) => tracing::info!("took over from the old sidecar image; it exits"),
            Err(err) => tracing::warn!(error = %err, "the old sidecar image went away before done"),
        }
    }

    /// Watches the old image after `go`: when it goes away before `done`, this image
    /// is nobody's main process (systemd starts the unit again, and the new start
    /// recovers the step): it exits at once, leaving its session to expire so the
    /// next image takes its nodes over.
    pub async fn watch(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let guard = self.stream.lock().await;
            let Some(stream) = guard.as_ref() else { return };
            let mut probe = [0u8; 1];
            if let Ok(0) = stream.try_read(&mut probe) {
                tracing::error!(
                    "the old sidecar image died during the handover; exiting so a restart recovers the step"
                );
                std::process::exit(1);
            }
        }
    }
}

/// Tells systemd that `pid` is the unit's main process now, and waits (a moment at
/// most) until systemd has read it, so the old image's exit does not count as the
/// unit's. A no-op outside systemd.
pub fn notify_main_pid(pid: u32) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::MainPid(pid)]) {
        tracing::warn!(error = %err, "failed to tell systemd the new main pid");
        return;
    }
    if let Err(err) = barrier(&path, Duration::from_secs(5)) {
        tracing::warn!(error = %err, "systemd did not confirm the new main pid");
    }
}

/// `sd_notify_barrier`: sends `BARRIER=1` with the write end of a pipe and waits for
/// systemd to close it (it has processed every earlier message then).
fn barrier(path: &std::ffi::OsStr, timeout: Duration) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socket};
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name)?,
        None => UnixAddr::new(bytes)?,
    };
    let (read, write) = nix::unistd::pipe()?;
    let sock = socket(nix::sys::socket::AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    let fds = [write.as_raw_fd()];
    let iov = [io::IoSlice::new(b"BARRIER=1")];
    sendmsg(sock.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), Some(&addr))?;
    drop(write);
    let mut fds = [nix::poll::PollFd::new(read.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms))? {
        0 => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to BARRIER=1")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_of_a_release() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(binary_in(d.path()), None);
        std::fs::write(d.path().join("sidecar-0.2.0"), "x").unwrap();
        assert_eq!(binary_in(d.path()), Some(d.path().join("sidecar-0.2.0")), "a single-file artifact");
        std::fs::write(d.path().join("README"), "x").unwrap();
        assert_eq!(binary_in(d.path()), None, "two files and no sidecar: which one?");
        std::fs::create_dir(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/sidecar"), "x").unwrap();
        assert_eq!(binary_in(d.path()), Some(d.path().join("bin/sidecar")));
        std::fs::write(d.path().join("sidecar"), "x").unwrap();
        assert_eq!(binary_in(d.path()), Some(d.path().join("sidecar")));
    }

    #[test]
    fn a_restarting_image_is_no_successor() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let got = strip_take_over(args(&["--config", "c.toml", "--take-over", "/s.sock", "run"]));
        assert_eq!(got, args(&["--config", "c.toml", "run"]));
        assert_eq!(strip_take_over(args(&["--take-over=/s", "-c", "x"])), args(&["-c", "x"]));
    }

    /// What systemd does with `BARRIER=1`: reads the message with its file
    /// descriptor and closes it, which ends the wait.
    #[test]
    fn the_barrier_waits_for_the_manager_to_close_the_descriptor() {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::AsRawFd;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut iov = [io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = recvmsg::<()>(manager.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
            let fds: Vec<_> = msg
                .cmsgs()
                .unwrap()
                .filter_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => Some(fds),
                    _ => None,
                })
                .flatten()
                .collect();
            let n = msg.bytes;
            std::thread::sleep(Duration::from_millis(100));
            for fd in &fds {
                let _ = nix::unistd::close(*fd);
            }
            (String::from_utf8_lossy(&buf[..n]).to_string(), fds.len())
        });
        let started = std::time::Instant::now();
        barrier(path.as_os_str(), Duration::from_secs(5)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100), "the barrier returned before the manager closed it");
        assert_eq!(reader.join().unwrap(), ("BARRIER=1".to_string(), 1));
        let nobody = d.path().join("nobody");
        let _silent = std::os::unix::net::UnixDatagram::bind(&nobody).unwrap();
        let err = barrier(nobody.as_os_str(), Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "a manager that never answers: {err}");
    }

    #[test]
    fn a_failed_attempt_is_remembered_for_its_version() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir(d.path())).unwrap();
        assert_eq!(failed_attempt(d.path(), "2"), None);
        record_failure(d.path(), "2", "it exited");
        assert_eq!(failed_attempt(d.path(), "2").as_deref(), Some("it exited"));
        assert_eq!(failed_attempt(d.path(), "3"), None);
        forget_failure(d.path());
        assert_eq!(failed_attempt(d.path(), "2"), None);
    }
}
