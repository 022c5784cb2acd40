//! The supervisor against real processes: the demo service and shell scripts started
//! from temporary release directories.

use baton_sidecar::config::{Config, ServiceConfig};
use baton_sidecar::host::pidfile;
use baton_sidecar::host::process::alive;
use baton_sidecar::host::supervisor::{Started, Status, Supervisor, SupervisorError};
use baton_tests::eventually_async;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(30);

/// A data directory and a service config; kills whatever the pid file names when dropped,
/// so a failing test leaks no process.
struct Fixture {
    data: tempfile::TempDir,
    service: Arc<ServiceConfig>,
}

impl Fixture {
    /// A fixture for the `[[service]]` table `service` (name "api").
    fn new(service: &str) -> Self {
        let text =
            format!("[zookeeper]\nconnect = \"zk:2181\"\n[host]\nid = \"h\"\n[[service]]\nname = \"api\"\n{service}");
        let mut config = Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"));
        Fixture { data: tempfile::tempdir().unwrap(), service: Arc::new(config.services.remove(0)) }
    }

    fn supervisor(&self) -> Supervisor {
        Supervisor::new(self.service.clone(), self.data.path())
    }

    /// A release directory for `version` holding `files` (name, content); `.sh` files are executable.
    fn release(&self, version: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.data.path().join("api/releases").join(version);
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            if name.ends_with(".sh") {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn pid_file(&self) -> Option<pidfile::PidRecord> {
        pidfile::read(&self.data.path().join("api").join(pidfile::FILE_NAME)).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(Some(record)) = pidfile::read(&self.data.path().join("api").join(pidfile::FILE_NAME)) {
            let _ = baton_sidecar::host::process::signal_group(record.pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn demo() -> String {
    baton_tests::bin::path("baton-demo-service").display().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `[[service]]` body running the demo service on `port` with `flags`.
fn demo_service(port: u16, flags: &str) -> String {
    format!(
        "run = [\"{}\", \"--port\", \"{port}\"{flags}]\nhealth = {{ http = \"http://127.0.0.1:{port}/health\", interval = \"100ms\" }}\n",
        demo()
    )
}

/// `GET path` on the local port: the body, or `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// Waits until the status satisfies `fact`.
async fn wait_for(sup: &Supervisor, what: &str, fact: impl Fn(&Status) -> bool) -> Status {
    let rx = sup.status();
    eventually_async(what, PATIENCE, || {
        let status = rx.borrow().clone();
        let ok = fact(&status);
        async move { ok.then_some(status) }
    })
    .await
}

fn pid_of(status: &Status) -> u32 {
    match status {
        Status::Starting { pid: Some(pid) } | Status::Healthy { pid: Some(pid), .. } => *pid,
        other => panic!("no pid in {other:?}"),
    }
}

async fn wait_gone(pid: u32) {
    eventually_async(
        &format!("process {pid} to be gone"),
        PATIENCE,
        || async move { (!alive(pid as i32)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_mode_gets_healthy_with_its_environment_and_logs_to_the_file() {
    let port = free_port();
    let script = "#!/bin/sh\necho \"service=$BATON_SERVICE version=$BATON_VERSION dir=$BATON_RELEASE_DIR\"\n\
                  exec \"$DEMO\" --port \"$PORT\" --version \"$BATON_VERSION\"\n";
    let fx = Fixture::new(&format!(
        "run = [\"bin/run.sh\"]\nenv = {{ DEMO = \"{}\", PORT = \"{port}\" }}\n\
         health = {{ http = \"http://127.0.0.1:{port}/health\", interval = \"100ms\" }}\n",
        demo()
    ));
    let release = fx.release("1.0.0", &[("bin/run.sh", script)]);
    let sup = fx.supervisor();
    let Started::Spawned { pid: Some(pid) } = sup.start(&release, "1.0.0").await.unwrap() else {
        panic!("not spawned")
    };
    sup.wait_healthy(PATIENCE).await.unwrap();
    assert!(matches!(*sup.status().borrow(), Status::Healthy { pid: Some(p), .. } if p == pid));
    assert_eq!(get(port, "/version").as_deref(), Some("1.0.0"));
    let record = fx.pid_file().expect("a pid file while it runs");
    assert_eq!((record.pid, record.pgid, record.version.as_str()), (pid, pid as i32, "1.0.0"));
    assert_eq!(record.release_dir, release.canonicalize().unwrap());
    let log = std::fs::read_to_string(sup.log_path()).unwrap();
    assert!(log.contains(&format!("service=api version=1.0.0 dir={}", release.display())), "{log}");
    assert!(log.contains(&format!("baton-demo-service 1.0.0 pid {pid} listening")), "{log}");
    let again = sup.start(&release, "1.0.1").await.unwrap_err();
    assert!(matches!(again, SupervisorError::AlreadyRunning { .. }), "{again}");
    sup.stop().await.unwrap();
    assert_eq!(*sup.status().borrow(), Status::Stopped);
    assert!(!alive(pid as i32), "the service still runs after stop");
    assert_eq!(fx.pid_file(), None);
    sup.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_service_goes_down_and_comes_back_healthy() {
    let port = free_port();
    let fx = Fixture::new(&demo_service(port, ""));
    let release = fx.release("1.0.0", &[]);
    let sup = fx.supervisor();
    sup.start(&release, "1.0.0").await.unwrap();
    sup.wait_healthy(PATIENCE).await.unwrap();
    let first = pid_of(&sup.status().borrow());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let down = wait_for(&sup, "Down after SIGKILL", |s| matches!(s, Status::Down { .. })).await;
    assert!(matches!(&down, Status::Down { reason, .. } if reason == "killed by signal SIGKILL"), "{down:?}");
    let back = wait_for(&sup, "Healthy again", |s| matches!(s, Status::Healthy { .. })).await;
    let second = pid_of(&back);
    assert_ne!(first, second);
    assert_eq!(fx.pid_file().map(|r| r.pid), Some(second));
    sup.stop().await.unwrap();
    assert!(!alive(second as i32));
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_terminates_the_whole_process_group() {
    let script = "#!/bin/sh\nsleep 1000 &\necho $! > grandchild.pid\nwait\n";
    let fx = Fixture::new(
        "run = [\"./run.sh\"]\nstop_timeout = \"20s\"\nhealth = { exec = [\"test\", \"-s\", \"grandchild.pid\"], interval = \"100ms\" }\n",
    );
    let release = fx.release("1.0.0", &[("run.sh", script)]);
    let sup = fx.supervisor();
    sup.start(&release, "1.0.0").await.unwrap();
    sup.wait_healthy(PATIENCE).await.unwrap();
    let leader = pid_of(&sup.status().borrow());
    let grandchild: u32 = std::fs::read_to_string(release.join("grandchild.pid")).unwrap().trim().parse().unwrap();
    assert!(alive(grandchild as i32));
    let started = Instant::now();
    sup.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "stop waited for SIGKILL: {:?}", started.elapsed());
    assert!(!alive(leader as i32), "the leader survived");
    wait_gone(grandchild).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_ignoring_sigterm_is_killed_after_stop_timeout() {
    let script = "#!/bin/sh\ntrap '' TERM\ntouch ready\nexec sleep 1000\n";
    let fx = Fixture::new(
        "run = [\"./run.sh\"]\nstop_timeout = \"1s\"\nhealth = { exec = [\"test\", \"-f\", \"ready\"], interval = \"100ms\" }\n",
    );
    let release = fx.release("1.0.0", &[("run.sh", script)]);
    let sup = fx.supervisor();
    sup.start(&release, "1.0.0").await.unwrap();
    sup.wait_healthy(PATIENCE).await.unwrap();
    let pid = pid_of(&sup.status().borrow());
    let started = Instant::now();
    sup.stop().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "stopped before stop_timeout: {:?}", started.elapsed());
    assert!(!alive(pid as i32), "the service survived SIGKILL");
    assert_eq!(*sup.status().borrow(), Status::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_health_check_misses_the_deadline() {
    let port = free_port();
    let fx = Fixture::new(&demo_service(port, ", \"--health-fail\""));
    let release = fx.release("1.0.0", &[]);
    let sup = fx.supervisor();
    sup.start(&release, "1.0.0").await.unwrap();
    eventually_async("the demo service to listen", PATIENCE, || async { get(port, "/version") }).await;
    let err = sup.wait_healthy(Duration::from_secs(1)).await.unwrap_err();
    match &err {
        SupervisorError::HealthDeadline { deadline, last_error: Some(last) } => {
            assert_eq!(*deadline, Duration::from_secs(1));
            assert!(last.ends_with("status 503 Service Unavailable"), "{last}");
        }
        other => panic!("expected a missed deadline, got {other:?}"),
    }
    assert!(err.to_string().starts_with("failed to become healthy within 1s: failed to get http://"), "{err}");
    assert!(matches!(*sup.status().borrow(), Status::Starting { .. }));
    sup.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_exiting_before_it_is_healthy_fails_the_wait() {
    let fx = Fixture::new(&format!(
        "run = [\"sh\", \"-c\", \"echo boom >&2; exit 3\"]\nhealth = {{ tcp = \"127.0.0.1:{}\" }}\n",
        free_port()
    ));
    let release = fx.release("1.0.0", &[]);
    let sup = fx.supervisor();
    sup.start(&release, "1.0.0").await.unwrap();
    let err = sup.wait_healthy(PATIENCE).await.unwrap_err();
    assert!(matches!(err, SupervisorError::Exited { code: Some(3), signal: None }), "{err:?}");
    assert_eq!(err.to_string(), "failed to become healthy: the service exited with code 3");
    sup.stop().await.unwrap();
    assert_eq!(*sup.status().borrow(), Status::Stopped);
    assert!(std::fs::read_to_string(sup.log_path()).unwrap().contains("boom"));
}

#[tokio::test(flavor = "multi_thread")]
async fn start_stop_mode_runs_the_commands_and_watches_health() {
    let fx = Fixture::new(
        "start = [\"sh\", \"-c\", \"echo start $BATON_VERSION >> ../events; touch running\"]\n\
         stop = [\"sh\", \"-c\", \"echo stop >> ../events; rm running\"]\n\
         health = { exec = [\"test\", \"-f\", \"running\"], interval = \"100ms\" }\n",
    );
    let release = fx.release("2.0.0", &[]);
    let events = release.parent().unwrap().join("events");
    let sup = fx.supervisor();
    assert_eq!(sup.start(&release, "2.0.0").await.unwrap(), Started::Spawned { pid: None });
    sup.wait_healthy(PATIENCE).await.unwrap();
    std::fs::remove_file(release.join("running")).unwrap();
    wait_for(&sup, "Unhealthy", |s| matches!(s, Status::Unhealthy { pid: None, .. })).await;
    std::fs::write(release.join("running"), "").unwrap();
    wait_for(&sup, "Healthy again", |s| matches!(s, Status::Healthy { pid: None, .. })).await;
    sup.stop().await.unwrap();
    assert_eq!(*sup.status().borrow(), Status::Stopped);
    assert_eq!(std::fs::read_to_string(&events).unwrap(), "start 2.0.0\nstop\n");
    assert!(!release.join("running").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_start_command_is_an_error() {
    let fx = Fixture::new(
        "start = [\"sh\", \"-c\", \"echo cannot start >&2; exit 4\"]\nstop = [\"true\"]\nhealth = { exec = [\"true\"] }\n",
    );
    let release = fx.release("1.0.0", &[]);
    let sup = fx.supervisor();
    let err = sup.start(&release, "1.0.0").await.unwrap_err().to_string();
    let log = sup.log_path().display().to_string();
    let expected = format!(
        "failed to run the start command (sh -c echo cannot start >&2; exit 4): exited with code 4 (its output is in {log})"
    );
    assert_eq!(err, expected);
    assert!(std::fs::read_to_string(&log).unwrap().contains("cannot start"));
    assert_eq!(*sup.status().borrow(), Status::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_supervisor_adopts_the_service_left_running() {
    let port = free_port();
    let fx = Fixture::new(&demo_service(port, ""));
    let release = fx.release("1.0.0", &[]);
    let first = fx.supervisor();
    let Started::Spawned { pid: Some(pid) } = first.start(&release, "1.0.0").await.unwrap() else { panic!() };
    first.wait_healthy(PATIENCE).await.unwrap();
    first.shutdown().await.unwrap();
    assert!(alive(pid as i32), "on_shutdown = keep stopped the service");
    assert_eq!(fx.pid_file().map(|r| r.pid), Some(pid));

    let second = fx.supervisor();
    assert_eq!(second.start(&release, "1.0.0").await.unwrap(), Started::Adopted { pid });
    second.wait_healthy(PATIENCE).await.unwrap();
    assert_eq!(pid_of(&second.status().borrow()), pid);
    let served = get(port, "/").unwrap();
    assert_eq!(served, format!("baton-demo-service version 1.0.0 pid {pid}\n"));
    second.stop().await.unwrap();
    wait_gone(pid).await;
    assert_eq!(fx.pid_file(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_service_that_dies_is_restarted() {
    let port = free_port();
    let fx = Fixture::new(&demo_service(port, ""));
    let release = fx.release("1.0.0", &[]);
    let first = fx.supervisor();
    let Started::Spawned { pid: Some(pid) } = first.start(&release, "1.0.0").await.unwrap() else { panic!() };
    drop(first); // as if the sidecar crashed
    let second = fx.supervisor();
    assert_eq!(second.start(&release, "1.0.0").await.unwrap(), Started::Adopted { pid });
    second.wait_healthy(PATIENCE).await.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let back =
        wait_for(&second, "a new healthy process", |s| matches!(s, Status::Healthy { pid: Some(p), .. } if *p != pid))
            .await;
    assert_eq!(fx.pid_file().map(|r| r.pid), Some(pid_of(&back)));
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_another_release_stops_the_recorded_one() {
    let port = free_port();
    let fx = Fixture::new(&demo_service(port, ""));
    let (old, new) = (fx.release("1.0.0", &[]), fx.release("2.0.0", &[]));
    let first = fx.supervisor();
    let Started::Spawned { pid: Some(old_pid) } = first.start(&old, "1.0.0").await.unwrap() else { panic!() };
    first.shutdown().await.unwrap();
    let second = fx.supervisor();
    let Started::Spawned { pid: Some(new_pid) } = second.start(&new, "2.0.0").await.unwrap() else { panic!() };
    assert_ne!(old_pid, new_pid);
    assert!(!alive(old_pid as i32), "the old release still runs");
    second.wait_healthy(PATIENCE).await.unwrap();
    assert_eq!(fx.pid_file().map(|r| (r.pid, r.version)), Some((new_pid, "2.0.0".to_string())));
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_shutdown_stop_stops_the_service_and_stop_without_start_uses_the_pid_file() {
    let port = free_port();
    let fx = Fixture::new(&format!("{}on_shutdown = \"stop\"\n", demo_service(port, "")));
    let release = fx.release("1.0.0", &[]);
    let sup = fx.supervisor();
    let Started::Spawned { pid: Some(pid) } = sup.start(&release, "1.0.0").await.unwrap() else { panic!() };
    sup.shutdown().await.unwrap();
    assert!(!alive(pid as i32));
    assert_eq!(*sup.status().borrow(), Status::Stopped);

    // A service left by an earlier sidecar is stopped by a fresh supervisor's stop().
    let keeper = Fixture {
        data: tempfile::tempdir().unwrap(),
        service: Arc::new(ServiceConfig { on_shutdown: Default::default(), ..(*fx.service).clone() }),
    };
    let release = keeper.release("1.0.0", &[]);
    let first = keeper.supervisor();
    let Started::Spawned { pid: Some(pid) } = first.start(&release, "1.0.0").await.unwrap() else { panic!() };
    first.shutdown().await.unwrap();
    keeper.supervisor().stop().await.unwrap();
    assert!(!alive(pid as i32));
    assert_eq!(keeper.pid_file(), None);
}

#[test]
fn the_fixture_release_helper_makes_scripts_executable() {
    let fx = Fixture::new("run = [\"x\"]\nhealth = { exec = [\"true\"] }\n");
    let dir = fx.release("1", &[("a.sh", "#!/bin/sh\n")]);
    let mode = std::fs::metadata(dir.join("a.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111);
    assert!(Path::new(&dir).is_dir());
}
