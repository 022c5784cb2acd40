//! A tracing layer that records, for sidecar cores running in this process, when
//! each host logged the marks of a step ([`Mark`]), on one monotonic clock.
//!
//! Each core runs inside a `host` span carrying its id, each of its agents inside an
//! `agent` span carrying the service; the layer finds both in the event's span
//! scope. Every other event is dropped after its message is read. A lost fence
//! ("fence lost; re-reading") names no version: it is recorded with none.

use crate::timeline::{Event, Mark};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// A mark and the version it is about.
#[derive(Debug, Clone)]
pub struct Rec {
    /// The mark, host and time.
    pub event: Event,
    /// The release version the mark is about (none for a lost fence).
    pub version: Option<String>,
    /// The service of the agent that logged it, if known.
    pub service: Option<String>,
}

/// The marks recorded so far, and the clock they are on.
#[derive(Debug, Clone)]
pub struct Recorder {
    base: Instant,
    recs: Arc<Mutex<Vec<Rec>>>,
}

impl Recorder {
    /// The process-wide recorder, installed as the tracing subscriber on first use
    /// (with sidecar warnings and errors printed to stderr).
    pub fn global() -> &'static Recorder {
        static R: OnceLock<Recorder> = OnceLock::new();
        R.get_or_init(|| {
            let r = Recorder { base: Instant::now(), recs: Arc::default() };
            let marks =
                Targets::new().with_target("baton_sidecar", Level::INFO).with_target("baton_bench", Level::INFO);
            let warnings = Targets::new().with_target("baton_sidecar", Level::WARN);
            let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(warnings);
            let _ = tracing_subscriber::registry().with(r.clone().with_filter(marks)).with(stderr).try_init();
            r
        })
    }

    /// Milliseconds from the recorder's base to `t`.
    pub fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.base).as_secs_f64() * 1000.0
    }

    /// The marks of hosts whose id starts with `prefix`, about `version`.
    pub fn marks(&self, prefix: &str, version: &str) -> Vec<Event> {
        self.select(|r| r.version.as_deref() == Some(version) && r.event.host.starts_with(prefix))
    }

    /// The marks of one rollout: those of hosts whose id starts with `prefix`, of
    /// `service` at `version`, and the lost fences of those hosts' agents of
    /// `service` from `from_ms` to `to_ms`.
    pub fn rollout(&self, prefix: &str, service: &str, version: &str, from_ms: f64, to_ms: f64) -> Vec<Event> {
        self.select(|r| {
            let mine = r.event.host.starts_with(prefix) && r.service.as_deref() == Some(service);
            let lost = r.event.mark == Mark::FenceLost && (from_ms..=to_ms).contains(&r.event.at_ms);
            mine && (lost || r.version.as_deref() == Some(version))
        })
    }

    fn select(&self, f: impl Fn(&Rec) -> bool) -> Vec<Event> {
        let recs = self.recs.lock().unwrap_or_else(|e| e.into_inner());
        recs.iter().filter(|r| f(r)).map(|r| r.event.clone()).collect()
    }
}

struct HostId(String);

struct ServiceName(String);

/// Collects the fields the recorder needs.
#[derive(Default)]
struct Fields {
    message: String,
    id: Option<String>,
    version: Option<String>,
    service: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "id" => self.id = Some(format!("{value:?}")),
            "version" | "to" => self.version = Some(format!("{value:?}")),
            "service" => self.service = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        if name != "host" && name != "agent" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        let Some(span) = ctx.span(id) else { return };
        if let Some(host) = f.id.filter(|_| name == "host") {
            span.extensions_mut().insert(HostId(host));
        }
        if let Some(service) = f.service.filter(|_| name == "agent") {
            span.extensions_mut().insert(ServiceName(service));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let now = Instant::now();
        let mut f = Fields::default();
        event.record(&mut f);
        let Some(mark) = Mark::from_message(&f.message) else { return };
        let (mut host, mut service) = (None, f.service);
        for span in ctx.event_scope(event).into_iter().flat_map(|scope| scope.from_root()) {
            let ext = span.extensions();
            host = host.or_else(|| ext.get::<HostId>().map(|h| h.0.clone()));
            service = service.or_else(|| ext.get::<ServiceName>().map(|s| s.0.clone()));
        }
        let Some(host) = host else { return };
        if f.version.is_none() && mark != Mark::FenceLost {
            return;
        }
        let rec = Rec { event: Event { host, mark, at_ms: self.ms(now) }, version: f.version, service };
        self.recs.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
    }
}
