//! What a supervisor reports: the service's [`Status`], how it was [`Started`], and
//! why an operation failed ([`SupervisorError`]).

use crate::host::command::{CommandError, ExitDescription};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What the service is doing, as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not running: never started, or stopped on purpose.
    Stopped,
    /// Spawned (or its start command ran); no health check has passed yet.
    Starting {
        /// The process id (run mode).
        pid: Option<u32>,
    },
    /// The last health check passed.
    Healthy {
        /// The process id (run mode).
        pid: Option<u32>,
        /// Since when it has been passing.
        since: SystemTime,
    },
    /// It was healthy and a check failed; checks go on and it turns healthy again when one passes.
    Unhealthy {
        /// The process id (run mode).
        pid: Option<u32>,
        /// The failed check's error.
        reason: String,
    },
    /// It exited on its own (run mode) and is restarted after `restart_in`.
    Down {
        /// How it exited.
        reason: String,
        /// The backoff before the next start.
        restart_in: Duration,
    },
}

/// How [`Supervisor::start`](super::Supervisor::start) got the service running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It was spawned (run mode, with its pid) or its start command ran (start/stop mode).
    Spawned {
        /// The process id (run mode).
        pid: Option<u32>,
    },
    /// A process a previous sidecar started for the same release was taken over.
    Adopted {
        /// The process id.
        pid: u32,
    },
}

impl std::fmt::Display for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Started::Spawned { pid: Some(pid) } => write!(f, "spawned pid {pid}"),
            Started::Spawned { pid: None } => f.write_str("start command ran"),
            Started::Adopted { pid } => write!(f, "adopted pid {pid}"),
        }
    }
}

/// Why a supervisor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A file or directory of the service could not be prepared.
    #[error("failed to {what} {}: {source}", .path.display())]
    Io {
        /// What was being done (`create`, `open`, `write`).
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The service process could not be spawned.
    #[error("failed to spawn the service: {0}")]
    Spawn(#[source] CommandError),
    /// The `start` or `stop` command of a start/stop service failed.
    #[error("failed to run the {name} command ({command}): {source} (its output is in {output})")]
    Command {
        /// `start` or `stop`.
        name: &'static str,
        /// The command line.
        command: String,
        /// What went wrong.
        #[source]
        source: CommandError,
        /// Where its output went.
        output: String,
    },
    /// `start` while the service already runs under this supervisor.
    #[error("failed to start version {requested}: version {running} already runs; stop it first")]
    AlreadyRunning {
        /// The version asked for.
        requested: String,
        /// The version running.
        running: String,
    },
    /// The service exited before its health check passed.
    #[error("failed to become healthy: the service {}", ExitDescription { code: *.code, signal: *.signal })]
    Exited {
        /// Its exit code, when known.
        code: Option<i32>,
        /// The signal that killed it, when known.
        signal: Option<i32>,
    },
    /// No health check passed within the deadline.
    #[error("failed to become healthy within {deadline:?}: {}", .last_error.as_deref().unwrap_or("no check finished"))]
    HealthDeadline {
        /// The deadline.
        deadline: Duration,
        /// The last check's error.
        last_error: Option<String>,
    },
    /// The service is not running (stopped, or never started).
    #[error("failed to become healthy: the service is not running")]
    NotRunning,
    /// A reload found no running service to tell.
    #[error("the service is not running: there is nothing to reload")]
    NothingToReload,
    /// The reload signal could not be sent.
    #[error("failed to send {signal} to the service (pid {pid}): {source}")]
    Signal {
        /// The signal's name.
        signal: String,
        /// The service's pid.
        pid: u32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The supervision task ended abnormally.
    #[error("failed to supervise the service: {0}")]
    Task(String),
}
