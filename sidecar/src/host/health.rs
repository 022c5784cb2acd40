//! Health checks: an HTTP GET answering 2xx, a TCP connect, or a command exiting 0,
//! each within a timeout.

use crate::config::HealthCheck;
use crate::host::command::{self, CommandContext, CommandError};
use std::time::Duration;

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The HTTP request failed or did not answer 2xx.
    #[error("failed to get {url}: {reason}")]
    Http {
        /// The URL probed.
        url: String,
        /// The status received or the transport error.
        reason: String,
    },
    /// The TCP connection was refused or failed.
    #[error("failed to connect to {addr}: {source}")]
    Tcp {
        /// The address probed.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The check command failed to start or exited non-zero.
    #[error("failed to run the check command ({command}): {source}")]
    Exec {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// The check did not finish within its timeout.
    #[error("failed to pass the check within {0:?}: it timed out")]
    Timeout(Duration),
}

/// One health check, ready to be run again and again (an HTTP check reuses its client).
#[derive(Debug, Clone)]
pub struct Checker {
    check: HealthCheck,
    timeout: Duration,
    client: Result<reqwest::Client, String>,
}

impl Checker {
    /// A checker for `check`, each run allowed `timeout`.
    pub fn new(check: HealthCheck, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| chain(&e));
        Checker { check, timeout, client }
    }

    /// Runs the check once; exec checks run in `ctx`.
    pub async fn check(&self, ctx: &CommandContext) -> Result<(), HealthError> {
        let probe = async {
            match &self.check {
                HealthCheck::Http(url) => self.http(url).await,
                HealthCheck::Tcp(addr) => tcp(addr).await,
                HealthCheck::Exec(argv) => exec(argv, ctx, self.timeout).await,
            }
        };
        tokio::time::timeout(self.timeout, probe).await.unwrap_or(Err(HealthError::Timeout(self.timeout)))
    }

    async fn http(&self, url: &str) -> Result<(), HealthError> {
        let err = |reason: String| HealthError::Http { url: url.into(), reason };
        let client = self.client.as_ref().map_err(|e| err(e.clone()))?;
        let response = client.get(url).send().await.map_err(|e| match e.is_timeout() {
            true => HealthError::Timeout(self.timeout),
            false => err(chain(&e)),
        })?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(err(format!("status {status}"))) }
    }
}

async fn tcp(addr: &str) -> Result<(), HealthError> {
    tokio::net::TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|source| HealthError::Tcp { addr: addr.into(), source })
}

async fn exec(argv: &[String], ctx: &CommandContext, timeout: Duration) -> Result<(), HealthError> {
    match command::run(argv, ctx, timeout).await {
        Ok(_) => Ok(()),
        Err(CommandError::Timeout { .. }) => Err(HealthError::Timeout(timeout)),
        Err(source) => Err(HealthError::Exec { command: argv.join(" "), source }),
    }
}

/// An error and its sources, `outer: inner: root`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}

/// Runs `check` once within `timeout`; an exec check runs in `ctx`.
#[cfg(test)]
pub async fn check_once(check: &HealthCheck, timeout: Duration, ctx: &CommandContext) -> Result<(), HealthError> {
    Checker::new(check.clone(), timeout).check(ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const SECOND: Duration = Duration::from_secs(1);

    /// A local HTTP server answering every request with `status`, or never when `None`.
    async fn server(status: Option<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                match status {
                    Some(s) => {
                        let reply = format!("HTTP/1.1 {s}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                        let _ = conn.write_all(reply.as_bytes()).await;
                    }
                    None => held.push(conn),
                }
            }
        });
        format!("http://{addr}/health")
    }

    /// An address where nothing listens.
    fn closed_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn here() -> CommandContext {
        CommandContext { cwd: std::env::temp_dir(), env: Default::default(), user: None }
    }

    #[tokio::test]
    async fn http_2xx_passes() {
        let url = server(Some("200 OK")).await;
        check_once(&HealthCheck::Http(url), SECOND, &here()).await.unwrap();
    }

    #[tokio::test]
    async fn http_503_fails_naming_the_status() {
        let url = server(Some("503 Service Unavailable")).await;
        let err = check_once(&HealthCheck::Http(url.clone()), SECOND, &here()).await.unwrap_err();
        assert_eq!(err.to_string(), format!("failed to get {url}: status 503 Service Unavailable"));
    }

    #[tokio::test]
    async fn http_redirect_is_not_healthy() {
        let url = server(Some("302 Found")).await;
        assert!(check_once(&HealthCheck::Http(url), SECOND, &here()).await.is_err());
    }

    #[tokio::test]
    async fn http_refused_fails() {
        let url = format!("http://{}/health", closed_addr());
        let err = check_once(&HealthCheck::Http(url), SECOND, &here()).await.unwrap_err();
        assert!(matches!(err, HealthError::Http { .. }), "{err}");
    }

    #[tokio::test]
    async fn http_silence_times_out() {
        let url = server(None).await;
        let err = check_once(&HealthCheck::Http(url), Duration::from_millis(200), &here()).await.unwrap_err();
        assert!(matches!(err, HealthError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn tcp_connect_passes_and_refusal_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        check_once(&HealthCheck::Tcp(open), SECOND, &here()).await.unwrap();
        let closed = closed_addr();
        let err = check_once(&HealthCheck::Tcp(closed.clone()), SECOND, &here()).await.unwrap_err();
        assert!(err.to_string().starts_with(&format!("failed to connect to {closed}: ")), "{err}");
    }

    #[tokio::test]
    async fn exec_runs_in_the_release_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = CommandContext { cwd: dir.path().into(), env: Default::default(), user: None };
        let check = HealthCheck::Exec(vec!["test".into(), "-f".into(), "ready".into()]);
        let err = check_once(&check, SECOND, &ctx).await.unwrap_err();
        assert_eq!(err.to_string(), "failed to run the check command (test -f ready): exited with code 1");
        std::fs::write(dir.path().join("ready"), "").unwrap();
        check_once(&check, SECOND, &ctx).await.unwrap();
    }

    #[tokio::test]
    async fn exec_past_its_timeout_fails() {
        let check = HealthCheck::Exec(vec!["sleep".into(), "30".into()]);
        let err = check_once(&check, Duration::from_millis(200), &here()).await.unwrap_err();
        assert!(matches!(err, HealthError::Timeout(_)), "{err}");
    }
}
