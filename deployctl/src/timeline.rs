//! `deployctl history SERVICE --timeline FILE.svg`: the hosts of the service's
//! newest rollout against time, drawn by hand as SVG from the history events and,
//! for a rollout in progress, the markers and tickets ZooKeeper holds now.
//!
//! # What each bar means
//! Events carry only their time, so a host's step start is inferred: with
//! `max_parallel` P (from the release's catalog policy, else the staged one), a
//! host's step began when the P-th host before it finished (or at staging). Before
//! that the host was downloading and queued; the last `bake` of a successful step is
//! drawn as bake. A failed step ends red; a `download_failed` event is a red tick
//! (with its count); pause, resume, halt and the end of the rollout are vertical
//! lines. A live marker is drawn from its `since` to now, a live ticket from its `at`.

use crate::model::{Queue, ServiceView};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};
use znode_schema::{EventKind, HistoryEvent, Policy};

/// What a bar segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Waiting,
    Step,
    Bake,
    Failed,
    Queued,
    Stepping,
}

impl Kind {
    fn color(self) -> &'static str {
        match self {
            Kind::Waiting => "#c9d6e8",
            Kind::Queued => "#f2d17a",
            Kind::Step => "#4a90d9",
            Kind::Stepping => "#1f5fa8",
            Kind::Bake => "#7cc47c",
            Kind::Failed => "#d9534f",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Kind::Waiting => "download + queue (inferred)",
            Kind::Queued => "queued (ticket, live)",
            Kind::Step => "step (inferred start)",
            Kind::Stepping => "stepping (marker, live)",
            Kind::Bake => "bake",
            Kind::Failed => "failed step",
        }
    }
}

/// One host's row.
#[derive(Debug, Default)]
struct Row {
    host: String,
    segments: Vec<(Kind, f64, f64)>,
    ticks: Vec<(f64, String)>,
}

/// The rollout drawn: its version, start, end and rows.
#[derive(Debug)]
pub struct Picture {
    service: String,
    version: String,
    start: SystemTime,
    end: SystemTime,
    rows: Vec<Row>,
    lines: Vec<(f64, String)>,
}

fn at(s: &str) -> Option<SystemTime> {
    znode_schema::time::parse(s)
}

fn secs(from: SystemTime, t: SystemTime) -> f64 {
    t.duration_since(from).unwrap_or_default().as_secs_f64()
}

/// An event and when it happened: its znode's creation time (milliseconds), or its
/// `at` (whole seconds) when that is unknown.
pub type Timed = (HistoryEvent, SystemTime);

/// Builds the picture of the newest rollout in `events` (oldest first).
pub fn picture(
    service: &str,
    events: &[Timed],
    policy: Option<&Policy>,
    view: &ServiceView,
    queue: &Queue,
) -> Option<Picture> {
    let staged_i = events.iter().rposition(|(e, _)| matches!(e.event, EventKind::Staged | EventKind::RolledBack))?;
    let (staged, start) = &events[staged_i];
    let (version, start) = (staged.version.clone().unwrap_or_default(), *start);
    let now = SystemTime::now();
    let mine = &events[staged_i + 1..];
    let end_i = mine.iter().position(|(e, _)| {
        matches!(e.event, EventKind::Completed | EventKind::Aborted | EventKind::RolledBack | EventKind::Staged)
    });
    let end = end_i.map(|i| mine[i].1).unwrap_or(now);
    let parallel = policy.map(|p| p.max_parallel.max(1)).unwrap_or(1) as usize;
    let bake = policy.map(|p| p.bake.0).unwrap_or(Duration::ZERO).as_secs_f64();
    let mut rows: Vec<Row> = Vec::new();
    let mut ends: Vec<f64> = Vec::new();
    let mut lines = Vec::new();
    for (e, t) in &mine[..end_i.unwrap_or(mine.len())] {
        let t = secs(start, *t);
        match (e.event, e.host.as_deref()) {
            (EventKind::HostUpgraded | EventKind::HostFailed, Some(h)) => {
                let began = if ends.len() >= parallel { ends[ends.len() - parallel] } else { 0.0 };
                let r = row_of(&mut rows, h);
                r.segments.push((Kind::Waiting, 0.0, began));
                if e.event == EventKind::HostFailed {
                    r.segments.push((Kind::Failed, began, t));
                } else {
                    let bake_from = (t - bake).max(began);
                    r.segments.push((Kind::Step, began, bake_from));
                    r.segments.push((Kind::Bake, bake_from, t));
                }
                ends.push(t);
            }
            (EventKind::DownloadFailed, Some(h)) => {
                let n = e.count.unwrap_or(1);
                row_of(&mut rows, h)
                    .ticks
                    .push((t, if n > 1 { format!("download failed x{n}") } else { "download failed".into() }));
            }
            (EventKind::Paused | EventKind::Resumed | EventKind::Halted | EventKind::Unlocked, _) => {
                lines.push((t, e.event.to_string()));
            }
            _ => {}
        }
    }
    if let Some(i) = end_i {
        lines.push((secs(start, end), mine[i].0.event.to_string()));
    } else {
        live(view, queue, service, &version, start, now, &mut rows);
    }
    for (h, _) in view.host_versions() {
        if !rows.iter().any(|r| r.host == h) {
            rows.push(Row { host: h.into(), ..Row::default() });
        }
    }
    rows.sort_by(|a, b| a.host.cmp(&b.host));
    Some(Picture { service: service.into(), version, start, end: end.max(start), rows, lines })
}

/// The live part of a rollout in progress: markers (stepping) and tickets (queued).
fn live(
    view: &ServiceView,
    queue: &Queue,
    service: &str,
    version: &str,
    start: SystemTime,
    now: SystemTime,
    rows: &mut Vec<Row>,
) {
    let mut add = |host: &str, kind: Kind, since: Option<SystemTime>| {
        let from = since.map(|s| secs(start, s)).unwrap_or(0.0);
        let to = secs(start, now);
        let r = row_of(rows, host);
        r.segments.push((Kind::Waiting, 0.0, from));
        r.segments.push((kind, from, to));
    };
    if let Some((_, e)) = queue.first_of(service).filter(|(_, e)| e.node.ok().is_some_and(|d| d.version == version)) {
        for (h, m) in &e.markers {
            add(h, Kind::Stepping, m.ok().and_then(|u| at(&u.since)));
        }
    }
    for (t, n) in &view.tickets {
        if n.ok().is_some_and(|k| k.version == version) {
            add(&t.host, Kind::Queued, n.ok().and_then(|k| at(&k.at)));
        }
    }
}

/// The row of `host`, added when missing.
fn row_of<'a>(rows: &'a mut Vec<Row>, host: &str) -> &'a mut Row {
    let i = match rows.iter().position(|r| r.host == host) {
        Some(i) => i,
        None => {
            rows.push(Row { host: host.into(), ..Row::default() });
            rows.len() - 1
        }
    };
    &mut rows[i]
}

/// XML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Picture {
    /// How many host rows it has.
    pub fn hosts(&self) -> usize {
        self.rows.len()
    }

    /// The picture as a standalone SVG document.
    pub fn svg(&self) -> String {
        const LEFT: f64 = 140.0;
        const WIDTH: f64 = 760.0;
        const ROW: f64 = 24.0;
        const TOP: f64 = 50.0;
        let total = secs(self.start, self.end).max(1.0);
        let x = |t: f64| LEFT + WIDTH * (t / total).clamp(0.0, 1.0);
        let height = TOP + ROW * self.rows.len() as f64 + 90.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#,
            w = LEFT + WIDTH + 40.0
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let title = format!(
            "{} {}: staged {} ({} to the end)",
            self.service,
            self.version,
            znode_schema::time::format(self.start),
            crate::output::short(Duration::from_secs_f64(total))
        );
        let _ = writeln!(s, r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#, esc(&title));
        let axis_y = TOP + ROW * self.rows.len() as f64 + 6.0;
        let step = nice_step(total);
        let mut t = 0.0;
        while t <= total + 1e-9 {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{axis_y}" stroke="#eeeeee"/><text x="{0:.1}" y="{1:.1}" text-anchor="middle" fill="#555">{2}</text>"##,
                x(t),
                axis_y + 14.0,
                crate::output::short(Duration::from_secs_f64(t))
            );
            t += step;
        }
        for (i, r) in self.rows.iter().enumerate() {
            let y = TOP + ROW * i as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 8.0,
                y + 16.0,
                esc(&r.host)
            );
            for (kind, from, to) in r.segments.iter().filter(|(_, f, t)| t > f) {
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {} to {}</title></rect>"#,
                    x(*from),
                    y + 4.0,
                    (x(*to) - x(*from)).max(1.0),
                    ROW - 8.0,
                    kind.color(),
                    esc(&r.host),
                    kind.label(),
                    crate::output::short(Duration::from_secs_f64(*from)),
                    crate::output::short(Duration::from_secs_f64(*to))
                );
            }
            for (t, label) in &r.ticks {
                let _ = writeln!(
                    s,
                    r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#d9534f" stroke-width="3"><title>{3}</title></line>"##,
                    x(*t),
                    y + 2.0,
                    y + ROW - 2.0,
                    esc(label)
                );
            }
        }
        for (t, label) in &self.lines {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2:.1}" stroke="#333" stroke-dasharray="4 3"/><text x="{0:.1}" y="{3}" text-anchor="middle" fill="#333">{4}</text>"##,
                x(*t),
                TOP - 4.0,
                axis_y,
                TOP - 8.0,
                esc(label)
            );
        }
        let legend_y = axis_y + 40.0;
        let kinds = [Kind::Waiting, Kind::Queued, Kind::Step, Kind::Stepping, Kind::Bake, Kind::Failed];
        for (i, k) in kinds.iter().enumerate() {
            let lx = 10.0 + 200.0 * (i % 4) as f64;
            let ly = legend_y + 18.0 * (i / 4) as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                ly - 10.0,
                k.color(),
                lx + 16.0,
                ly,
                k.label()
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// An axis step giving 5 to 10 ticks.
fn nice_step(total: f64) -> f64 {
    let candidates = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0];
    candidates.iter().copied().find(|c| total / c <= 10.0).unwrap_or(total / 10.0)
}
