//! Prometheus metrics: `[metrics] listen = "ADDR:PORT"` serves `GET /metrics` in the
//! OpenMetrics text format (prometheus-client).
//!
//! One registry per process ([`get`]): the agents and the session link record into
//! it as they go, and the server encodes it per scrape. Labels are the service (and
//! an outcome, state or reason); a sidecar is one host, so there is no host label:
//! the scrape target says which host it is.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `baton_build_info` | info | `version` |
//! | `baton_service_version_info` | gauge (1 for the active release) | `service`, `version` |
//! | `baton_service_state` | gauge (1 for the agent's state) | `service`, `state` |
//! | `baton_steps_total` | counter | `service`, `outcome` (`upgraded`, `failed`, `undone`) |
//! | `baton_step_duration_seconds` | histogram (fence to commit) | `service`, `outcome` |
//! | `baton_downloads_total` | counter | `service`, `outcome` (`verified`, `failed`) |
//! | `baton_download_duration_seconds` | histogram (verified downloads) | `service` |
//! | `baton_download_bytes_total` | counter (verified artifacts' sizes) | `service` |
//! | `baton_verification_failures_total` | counter | `service`, `reason` (`sha256`, `size`, `signature`, `unpack`) |
//! | `baton_zookeeper_session_up` | gauge (1 while a session is live) | |
//! | `baton_zookeeper_session_losses_total` | counter | |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Service {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceVersion {
    service: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceState {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    service: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    service: String,
    reason: String,
}

fn step_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// The version and state a service's gauges show.
type Shown = (Option<String>, Option<String>);

/// Every metric of this process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    version: Family<ServiceVersion, Gauge>,
    state: Family<ServiceState, Gauge>,
    steps: Family<Outcome, Counter>,
    step_seconds: Family<Outcome, Histogram, fn() -> Histogram>,
    downloads: Family<Outcome, Counter>,
    download_seconds: Family<Service, Histogram, fn() -> Histogram>,
    download_bytes: Family<Service, Counter>,
    verification: Family<Reason, Counter>,
    session_up: Gauge,
    session_losses: Counter,
    /// The labels last set to 1 per service (version, state), to clear them.
    current: Mutex<std::collections::HashMap<String, Shown>>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register("baton_build", "The sidecar's build", Info::new(vec![("version", crate::VERSION)]));
        let version = Family::<ServiceVersion, Gauge>::default();
        registry.register("baton_service_version_info", "The active release of each service (1)", version.clone());
        let state = Family::<ServiceState, Gauge>::default();
        registry.register("baton_service_state", "Each service's agent state (1 for the current one)", state.clone());
        let steps = Family::<Outcome, Counter>::default();
        registry.register("baton_steps", "Upgrade steps that ended, by outcome", steps.clone());
        let step_seconds = Family::<Outcome, Histogram, fn() -> Histogram>::new_with_constructor(step_buckets);
        registry.register("baton_step_duration_seconds", "Steps from fence to commit", step_seconds.clone());
        let downloads = Family::<Outcome, Counter>::default();
        registry.register("baton_downloads", "Downloads of staged releases, by outcome", downloads.clone());
        let download_seconds = Family::<Service, Histogram, fn() -> Histogram>::new_with_constructor(step_buckets);
        registry.register("baton_download_duration_seconds", "Verified downloads", download_seconds.clone());
        let download_bytes = Family::<Service, Counter>::default();
        registry.register("baton_download_bytes", "Bytes of verified artifacts", download_bytes.clone());
        let verification = Family::<Reason, Counter>::default();
        registry.register("baton_verification_failures", "Artifacts refused, by reason", verification.clone());
        let session_up = Gauge::default();
        registry.register("baton_zookeeper_session_up", "1 while a ZooKeeper session is live", session_up.clone());
        let session_losses = Counter::default();
        registry.register("baton_zookeeper_session_losses", "ZooKeeper sessions lost", session_losses.clone());
        Metrics {
            registry,
            version,
            state,
            steps,
            step_seconds,
            downloads,
            download_seconds,
            download_bytes,
            verification,
            session_up,
            session_losses,
            current: Mutex::default(),
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `service` runs `version` (or nothing) and its agent is in `state`.
    pub fn service(&self, service: &str, version: Option<&str>, state: &str) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let (was_version, was_state) = current.entry(service.to_string()).or_default();
        if was_version.as_deref() != version {
            if let Some(v) = was_version.take() {
                self.version.remove(&ServiceVersion { service: service.into(), version: v });
            }
            if let Some(v) = version {
                self.version.get_or_create(&ServiceVersion { service: service.into(), version: v.into() }).set(1);
            }
            *was_version = version.map(str::to_string);
        }
        if was_state.as_deref() != Some(state) {
            if let Some(s) = was_state.take() {
                self.state.remove(&ServiceState { service: service.into(), state: s });
            }
            self.state.get_or_create(&ServiceState { service: service.into(), state: state.into() }).set(1);
            *was_state = Some(state.to_string());
        }
    }

    /// A step of `service` ended with `outcome` (`upgraded`, `failed`, `undone`) after `took`.
    pub fn step(&self, service: &str, outcome: &str, took: Option<Duration>) {
        let labels = Outcome { service: service.into(), outcome: outcome.into() };
        self.steps.get_or_create(&labels).inc();
        if let Some(t) = took {
            self.step_seconds.get_or_create(&labels).observe(t.as_secs_f64());
        }
    }

    /// A verified download of `bytes` that took `took`.
    pub fn downloaded(&self, service: &str, bytes: u64, took: Duration) {
        let labels = Outcome { service: service.into(), outcome: "verified".into() };
        self.downloads.get_or_create(&labels).inc();
        self.download_seconds.get_or_create(&Service { service: service.into() }).observe(took.as_secs_f64());
        self.download_bytes.get_or_create(&Service { service: service.into() }).inc_by(bytes);
    }

    /// A failed download; `reason` when the artifact was refused by verification.
    pub fn download_failed(&self, service: &str, reason: Option<&str>) {
        let labels = Outcome { service: service.into(), outcome: "failed".into() };
        self.downloads.get_or_create(&labels).inc();
        if let Some(r) = reason {
            self.verification.get_or_create(&Reason { service: service.into(), reason: r.into() }).inc();
        }
    }

    /// The ZooKeeper session is up (or not).
    pub fn session(&self, up: bool) {
        let was = self.session_up.set(i64::from(up));
        if was == 1 && !up {
            self.session_losses.inc();
        }
    }
}

/// This process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The verification reason of an install error, if it was one.
pub fn verification_reason(err: &crate::host::releases::InstallError) -> Option<&'static str> {
    use crate::host::download::DownloadError;
    use crate::host::releases::InstallError;
    match err {
        InstallError::Download { source: DownloadError::Checksum { .. }, .. } => Some("sha256"),
        InstallError::Download { source: DownloadError::Size { .. }, .. } => Some("size"),
        InstallError::Signature { .. } => Some("signature"),
        InstallError::Unpack { .. } => Some("unpack"),
        _ => None,
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Request, Response, StatusCode};
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                match (req.method(), req.uri().path()) {
                    (&hyper::Method::GET, "/metrics") => Response::builder()
                        .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                        .body(Full::new(Bytes::from(get().encode()))),
                    _ => Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from("not found\n"))),
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(err) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
                tracing::debug!(%peer, error = %err, "metrics: connection ended with an error");
            }
        });
    }
}

/// The running metrics server; dropping it stops it.
#[derive(Debug)]
pub struct Server(pub tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds `addr` for [`serve`]; the error names the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    crate::daemon::bind(addr).await.map_err(|e| anyhow::anyhow!("[metrics] listen = \"{addr}\": {e}"))
}
