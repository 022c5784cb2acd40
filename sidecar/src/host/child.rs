//! The service's own process in run mode: spawned by this sidecar, or adopted from a
//! previous sidecar through its pid file. Either way it leads its own process group,
//! and the group is the unit that is stopped.

use crate::host::command::{self, CommandContext, CommandError, ExitDescription};
use crate::host::pidfile::PidRecord;
use crate::host::process::{alive, group_alive, signal_group, start_time};
use nix::sys::signal::Signal;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;
use tokio::time::{Instant, sleep};

/// How often liveness is polled where it cannot be awaited.
const POLL: Duration = Duration::from_millis(50);
/// How long a SIGKILLed group may take to disappear.
const KILL_PATIENCE: Duration = Duration::from_secs(5);

/// A running service process.
#[derive(Debug)]
pub struct ServiceProcess {
    pid: u32,
    pgid: i32,
    kind: Kind,
    /// The spawn gate (see [`ServiceProcess::spawn`]): open until released.
    gate: Option<tokio::process::ChildStdin>,
}

/// The gate a spawned service passes before it becomes itself: a shell that waits
/// for one line on its stdin, then execs the service (same pid); end of input (the
/// sidecar died before releasing it) makes it exit instead.
const GATE: &str = "read -r _ || exit 125; exec \"$@\"";

#[derive(Debug)]
enum Kind {
    /// Our child: its exit status can be awaited.
    Spawned(Child),
    /// Another sidecar's child: only its liveness can be polled.
    Adopted { start_time: Option<u64> },
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The group was gone within the grace period after SIGTERM.
    Terminated,
    /// The group outlived the grace period and was SIGKILLed.
    Killed,
}

impl ServiceProcess {
    /// Spawns `argv` in `ctx`, leading a new process group, its output to `output`
    /// (stdout, stderr). It is not killed when this value is dropped: the service
    /// outlives a sidecar crash.
    ///
    /// The service waits at a gate until [`ServiceProcess::release`]: the caller
    /// records the pid first, so a sidecar killed between the spawn and the record
    /// leaves no unrecorded service behind (the gate sees its stdin close and exits
    /// without starting the service).
    pub fn spawn(argv: &[String], ctx: &CommandContext, output: (Stdio, Stdio)) -> Result<Self, CommandError> {
        let program = command::resolve_program(&argv[0], &ctx.cwd).display().to_string();
        if !std::path::Path::new(&program).is_file() && program.contains('/') {
            // Say what is missing now rather than through the gate's exit status.
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
            return Err(command::spawn_error(&program, ctx, source));
        }
        let gated: Vec<String> = ["/bin/sh", "-c", GATE, "baton-gate", program.as_str()]
            .into_iter()
            .map(str::to_string)
            .chain(argv[1..].iter().cloned())
            .collect();
        let mut cmd = command::build(&gated, ctx);
        cmd.stdout(output.0).stderr(output.1).stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| command::spawn_error(&program, ctx, source))?;
        let gate = child.stdin.take();
        let pid = child.id().ok_or_else(|| CommandError::Spawn { program, source: std::io::Error::other("no pid") })?;
        Ok(ServiceProcess { pid, pgid: pid as i32, kind: Kind::Spawned(child), gate })
    }

    /// Lets a spawned service through its gate (after its pid is recorded). Its stdin
    /// then reads end of input, as `/dev/null` would.
    pub async fn release(&mut self) {
        use tokio::io::AsyncWriteExt;
        if let Some(mut gate) = self.gate.take() {
            if let Err(err) = gate.write_all(b"go\n").await {
                tracing::warn!(pid = self.pid, error = %err, "failed to release the service's spawn gate");
            }
        }
    }

    /// Takes over the process a pid file names.
    pub fn adopt(record: &PidRecord) -> Self {
        ServiceProcess {
            pid: record.pid,
            pgid: record.pgid,
            kind: Kind::Adopted { start_time: record.start_time },
            gate: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its process group id.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits until the process exits. Cancel-safe.
    pub async fn exited(&mut self) -> ExitDescription {
        match &mut self.kind {
            Kind::Spawned(child) => match child.wait().await {
                Ok(status) => status.into(),
                Err(_) => ExitDescription { code: None, signal: None },
            },
            Kind::Adopted { start_time: recorded } => {
                let pid = self.pid as i32;
                while alive(pid) && (recorded.is_none() || start_time(pid) == *recorded) {
                    sleep(POLL).await;
                }
                ExitDescription { code: None, signal: None }
            }
        }
    }

    /// Stops the whole group: SIGTERM, up to `grace` for every member to exit, then
    /// SIGKILL. Reaps the process when it is our child.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        let pgid = self.pgid();
        let mut leader = match &mut self.kind {
            Kind::Spawned(child) => Some(child),
            Kind::Adopted { .. } => None,
        };
        let stopped = stop_group(pgid, grace, leader.as_deref_mut()).await;
        if let Some(child) = leader {
            let _ = child.wait().await;
        }
        stopped
    }
}

/// Stops process group `pgid`: SIGTERM, up to `grace` for it to disappear, then SIGKILL.
/// `leader`, when it is our child, is reaped on the way.
pub async fn stop_group(pgid: i32, grace: Duration, mut leader: Option<&mut Child>) -> Stopped {
    let _ = signal_group(pgid, Signal::SIGTERM);
    if group_gone_within(pgid, grace, leader.as_deref_mut()).await {
        return Stopped::Terminated;
    }
    tracing::warn!(pgid, ?grace, "process group outlived its grace period; sending SIGKILL");
    let _ = signal_group(pgid, Signal::SIGKILL);
    if !group_gone_within(pgid, KILL_PATIENCE, leader).await {
        tracing::error!(pgid, "process group still alive after SIGKILL");
    }
    Stopped::Killed
}

/// Whether every member of group `pgid` is gone within `patience`.
async fn group_gone_within(pgid: i32, patience: Duration, mut leader: Option<&mut Child>) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(child) = leader.as_deref_mut() {
            let _ = child.try_wait();
        }
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}
