//! Running the commands a config names (hooks, exec health checks, start/stop):
//! where the program is found, in which directory and environment, and running one
//! to completion within a timeout without leaving anything behind.

use crate::host::process::{GroupGuard, signal_group};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 10;
/// Bytes of stderr kept while reading.
const TAIL_BYTES: usize = 8 * 1024;
/// How long to wait for the end of a finished command's stderr.
const DRAIN: Duration = Duration::from_secs(1);

/// Where and with what environment a service's commands run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandContext {
    /// The working directory, usually the active release directory.
    pub cwd: PathBuf,
    /// Variables added to the sidecar's own environment.
    pub env: BTreeMap<String, String>,
    /// The user to run as (the sidecar's own when `None`).
    pub user: Option<RunAs>,
}

/// A user a service runs as: its ids, resolved when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory.
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(RunAs { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir }),
            Ok(None) => Err(format!("no such user {name:?}")),
            Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
        }
    }
}

/// Why a command did not run to a clean exit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started.
    #[error("failed to start {program}: {source}")]
    Spawn {
        /// The program as resolved.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the process failed.
    #[error("failed to wait for {program}: {source}")]
    Wait {
        /// The program as resolved.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran past its timeout and was killed with its process group.
    #[error("timed out after {timeout:?} and was killed{}", tail(.stderr))]
    Timeout {
        /// The time it was given.
        timeout: Duration,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// It exited with a failure.
    #[error("{status}{}", tail(.stderr))]
    Failed {
        /// How it exited.
        status: ExitDescription,
        /// The last lines of its stderr.
        stderr: String,
    },
}

fn tail(stderr: &str) -> String {
    if stderr.is_empty() { String::new() } else { format!("; stderr: {stderr}") }
}

/// How a process ended, for messages: `exited with code 3`, `killed by signal SIGKILL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitDescription {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal, when one killed it.
    pub signal: Option<i32>,
}

impl From<ExitStatus> for ExitDescription {
    fn from(status: ExitStatus) -> Self {
        ExitDescription { code: status.code(), signal: status.signal() }
    }
}

impl fmt::Display for ExitDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(signal) => write!(f, "killed by signal {signal}"),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            (None, None) => f.write_str("exited (status unknown)"),
        }
    }
}

/// The program of `argv`: a path with a `/` is resolved against `cwd`, a bare name is
/// looked up in `PATH`.
pub fn resolve_program(program: &str, cwd: &Path) -> PathBuf {
    let path = Path::new(program);
    if program.contains('/') && path.is_relative() { cwd.join(path) } else { path.to_path_buf() }
}

/// A command for `argv` (not empty) in `ctx`, in its own process group, stdin from
/// `/dev/null`, not killed when dropped.
pub fn build(argv: &[String], ctx: &CommandContext) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(resolve_program(&argv[0], &ctx.cwd));
    cmd.args(&argv[1..]).current_dir(&ctx.cwd).envs(&ctx.env).stdin(Stdio::null()).process_group(0);
    if let Some(user) = &ctx.user {
        // Supplementary groups are dropped by std when root changes the uid.
        cmd.uid(user.uid).gid(user.gid);
        cmd.env("USER", &user.name).env("LOGNAME", &user.name).env("HOME", &user.home);
    }
    cmd.kill_on_drop(false);
    cmd
}

/// A spawn failure, blaming the working directory when that is what is missing.
pub fn spawn_error(program: &str, ctx: &CommandContext, source: std::io::Error) -> CommandError {
    let source = if ctx.cwd.is_dir() {
        source
    } else {
        std::io::Error::new(source.kind(), format!("working directory {} is missing ({source})", ctx.cwd.display()))
    };
    CommandError::Spawn { program: program.into(), source }
}

/// Runs `argv` to completion within `timeout` and returns the last lines of its stderr.
/// A failure, the timeout (the whole process group is SIGKILLed) and anything the
/// command left running in its group (SIGKILLed when it exits) are all handled here;
/// dropping the future kills the group too.
pub async fn run(argv: &[String], ctx: &CommandContext, timeout: Duration) -> Result<String, CommandError> {
    let program = resolve_program(&argv[0], &ctx.cwd).display().to_string();
    let mut cmd = build(argv, ctx);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| spawn_error(&program, ctx, source))?;
    let pgid = child.id().map_or(0, |pid| pid as i32);
    let mut guard = GroupGuard::new(pgid);
    let reader = tokio::spawn(read_tail(child.stderr.take()));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Whatever is left of the group (a timed-out command, a forgotten background job).
    let _ = signal_group(pgid, Signal::SIGKILL);
    guard.disarm();
    let stderr = match tokio::time::timeout(DRAIN, reader).await {
        Ok(Ok(tail)) => tail,
        _ => String::new(),
    };
    match waited {
        Err(_elapsed) => {
            let _ = child.wait().await;
            Err(CommandError::Timeout { timeout, stderr })
        }
        Ok(Err(source)) => Err(CommandError::Wait { program, source }),
        Ok(Ok(status)) if status.success() => Ok(stderr),
        Ok(Ok(status)) => Err(CommandError::Failed { status: status.into(), stderr }),
    }
}

/// Runs `argv` within `timeout` with its output to `output` (stdout, stderr). Unlike
/// [`run`], what it leaves running in its group stays (a start command may launch the
/// service that way); on timeout, or when the future is dropped, the group is SIGKILLed.
pub async fn run_with_output(
    argv: &[String],
    ctx: &CommandContext,
    output: (Stdio, Stdio),
    timeout: Duration,
) -> Result<(), CommandError> {
    let program = resolve_program(&argv[0], &ctx.cwd).display().to_string();
    let mut cmd = build(argv, ctx);
    cmd.stdout(output.0).stderr(output.1);
    let mut child = cmd.spawn().map_err(|source| spawn_error(&program, ctx, source))?;
    let mut guard = GroupGuard::new(child.id().map_or(0, |pid| pid as i32));
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_elapsed) => {
            drop(guard);
            let _ = child.wait().await;
            Err(CommandError::Timeout { timeout, stderr: String::new() })
        }
        Ok(waited) => {
            guard.disarm();
            match waited {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(CommandError::Failed { status: status.into(), stderr: String::new() }),
                Err(source) => Err(CommandError::Wait { program, source }),
            }
        }
    }
}

/// Reads a stream to its end, keeping the last [`TAIL_LINES`] lines.
async fn read_tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else { return String::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
        }
    }
    last_lines(&String::from_utf8_lossy(&kept), TAIL_LINES)
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn root() -> CommandContext {
        CommandContext { cwd: "/".into(), env: BTreeMap::new(), user: None }
    }

    #[test]
    fn programs_with_a_slash_resolve_against_the_directory() {
        assert_eq!(resolve_program("bin/api", Path::new("/r")), Path::new("/r/bin/api"));
        assert_eq!(resolve_program("./api", Path::new("/r")), Path::new("/r/./api"));
        assert_eq!(resolve_program("/usr/bin/env", Path::new("/r")), Path::new("/usr/bin/env"));
        assert_eq!(resolve_program("systemctl", Path::new("/r")), Path::new("systemctl"));
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 2), "");
    }

    #[tokio::test]
    async fn runs_in_the_directory_with_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let ctx =
            CommandContext { cwd: dir.path().into(), env: [("X".to_string(), "42".to_string())].into(), user: None };
        run(&sh("echo $X > out"), &ctx, Duration::from_secs(10)).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("out")).unwrap(), "42\n");
    }

    #[tokio::test]
    async fn failure_names_the_status_and_stderr() {
        let err = run(&sh("echo one >&2; echo two >&2; exit 3"), &root(), Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(err.to_string(), "exited with code 3; stderr: one | two");
    }

    #[tokio::test]
    async fn a_missing_program_fails_to_start() {
        let err = run(&["no-such-program-baton".into()], &root(), Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().starts_with("failed to start no-such-program-baton: No such file"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_directory_is_blamed() {
        let ctx = CommandContext { cwd: "/nonexistent/release".into(), env: BTreeMap::new(), user: None };
        let err = run(&sh("true"), &ctx, Duration::from_secs(1)).await.unwrap_err().to_string();
        assert!(err.contains("working directory /nonexistent/release is missing"), "{err}");
    }
}
