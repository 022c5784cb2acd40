//! Drain and undrain hooks: commands run around an upgrade step.
//!
//! A hook runs in the release directory with the service's environment, in its own
//! process group. It must exit 0 within its timeout; on timeout its whole group is
//! SIGKILLed. Anything it leaves running in its group is killed when it exits.

use crate::host::command::{self, CommandContext, CommandError};
use std::path::Path;
use std::time::Duration;

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook could not be run, exited with a failure, or timed out.
    #[error("failed to run the {name} hook ({command}): {source}")]
    Failed {
        /// The hook's name (`drain`, `undrain`).
        name: String,
        /// The command line.
        command: String,
        /// What went wrong, with the last lines of its stderr.
        #[source]
        source: CommandError,
    },
}

/// Runs hook `name` (`cmd`, not empty) in `cwd` with `env` added, within `timeout`.
pub async fn run_hook(
    name: &str,
    cmd: &[String],
    cwd: &Path,
    env: &std::collections::BTreeMap<String, String>,
    timeout: Duration,
) -> Result<(), HookError> {
    let ctx = CommandContext { cwd: cwd.to_path_buf(), env: env.clone(), user: None };
    tracing::info!(hook = name, command = %cmd.join(" "), "running hook");
    match command::run(cmd, &ctx, timeout).await {
        Ok(_) => Ok(()),
        Err(source) => {
            tracing::warn!(hook = name, err = %source, "hook failed");
            Err(HookError::Failed { name: name.into(), command: cmd.join(" "), source })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Instant;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    async fn hook(script: &str, timeout: Duration) -> (Result<(), HookError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([("WHO".to_string(), "baton".to_string())]);
        (run_hook("drain", &sh(script), dir.path(), &env, timeout).await, dir)
    }

    #[tokio::test]
    async fn a_successful_hook_runs_in_the_directory_with_the_environment() {
        let (result, dir) = hook("echo $WHO > drained", Duration::from_secs(10)).await;
        result.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("drained")).unwrap(), "baton\n");
    }

    #[tokio::test]
    async fn a_failing_hook_names_itself_its_status_and_stderr() {
        let (result, _dir) = hook("echo draining >&2; echo 'no backend' >&2; exit 7", Duration::from_secs(10)).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "failed to run the drain hook (sh -c echo draining >&2; echo 'no backend' >&2; exit 7): \
             exited with code 7; stderr: draining | no backend"
        );
    }

    #[tokio::test]
    async fn a_hook_killed_by_a_signal_says_so() {
        let (result, _dir) = hook("kill -9 $$", Duration::from_secs(10)).await;
        assert!(result.unwrap_err().to_string().ends_with("killed by signal SIGKILL"));
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_group() {
        let start = Instant::now();
        let (result, dir) =
            hook("sleep 60 & echo $! > child; echo started >&2; wait", Duration::from_millis(500)).await;
        let err = result.unwrap_err().to_string();
        assert!(err.ends_with("timed out after 500ms and was killed; stderr: started"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(30), "the hook was not cut short");
        let child: i32 = std::fs::read_to_string(dir.path().join("child")).unwrap().trim().parse().unwrap();
        crate::host::process::tests::wait_until(|| !crate::host::process::alive(child));
    }

    #[tokio::test]
    async fn a_missing_program_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_hook("undrain", &["bin/nope".into()], dir.path(), &BTreeMap::new(), Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("failed to run the undrain hook (bin/nope): failed to start "), "{err}");
        assert!(err.contains("bin/nope: No such file"), "{err}");
    }
}
