//! Which version a starting sidecar runs (SPEC step 9) when nothing of the service
//! runs on this host. A service that runs (a restarted sidecar adopts it) is never
//! switched at boot: it keeps its release and moves, if it must, by a fenced step
//! like any other host.
//!
//! 1. The most popular version among the other online hosts of the service; ties go
//!    to the most recently staged of them (catalog `staged_at`).
//! 2. No host online: this host's own last active release.
//! 3. Nothing local: the staged release.
//! 4. Nothing staged either: nothing to run until something is staged.
//!
//! A version whose rollout lists this host in `failed_hosts` (read from ZooKeeper:
//! the failure memory survives restarts) is never chosen by 1 or 3.

use crate::coord::session::Session;
use crate::coord::zk::{self, ZkError};
use std::collections::{BTreeMap, BTreeSet};
use znode_schema::{Current, Release};

/// Why a version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The most popular version among online hosts.
    Popular,
    /// No host online: this host's last active release.
    LastActive,
    /// Nothing local: the staged release.
    Staged,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Popular => "the most popular version online",
            Reason::LastActive => "no host online: the last active release here",
            Reason::Staged => "nothing local: the staged release",
        })
    }
}

/// What boot knows when it decides.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// Online hosts per version (other hosts only).
    pub online: BTreeMap<String, u32>,
    /// `staged_at` of versions from the catalog, for ties.
    pub staged_at: BTreeMap<String, String>,
    /// Versions whose step failed on this host in a rollout still open.
    pub failed: BTreeSet<String>,
    /// The local active release.
    pub last_active: Option<String>,
    /// The staged version.
    pub staged: Option<String>,
}

/// Chooses the boot version.
pub fn choose(f: &Facts) -> Option<(String, Reason)> {
    let candidates = || f.online.iter().filter(|(v, _)| !f.failed.contains(*v));
    let top = candidates().map(|(_, n)| *n).max().unwrap_or(0);
    let popular: Vec<&String> = candidates().filter(|(_, n)| **n == top && top > 0).map(|(v, _)| v).collect();
    // Ties: the most recently staged; a version missing from the catalog loses.
    let newest = popular.into_iter().max_by(|a, b| {
        let ka = (f.staged_at.get(*a), *a);
        let kb = (f.staged_at.get(*b), *b);
        ka.cmp(&kb)
    });
    if let Some(v) = newest {
        return Some((v.clone(), Reason::Popular));
    }
    if let Some(v) = &f.last_active {
        return Some((v.clone(), Reason::LastActive));
    }
    f.staged.clone().filter(|v| !f.failed.contains(v)).map(|v| (v, Reason::Staged))
}

/// How many registrations boot reads first when more hosts are online than twice
/// that: a sample, at random.
pub const SAMPLE: usize = 32;

/// Whether a sample's counts settle the most popular version: one version not in
/// `failed` holds at least 90% of the registrations read (29 of 32). Were it held
/// by at most half the fleet, a random sample of 32 would show it that often with
/// a probability below 10⁻⁵; any version the sample misses is rarer still.
pub fn sample_settles(counts: &BTreeMap<String, u32>, failed: &BTreeSet<String>) -> bool {
    let total: u32 = counts.values().sum();
    let top = counts.iter().filter(|(v, _)| !failed.contains(*v)).map(|(_, n)| *n).max().unwrap_or(0);
    total > 0 && top * 10 >= total * 9
}

/// Reads the online hosts' versions of `service` (this host excluded) and the
/// catalog dates of the versions seen. Unreadable registrations are skipped.
///
/// The registrations are read all at once (every request in flight on the one
/// connection). With more than 2 × [`SAMPLE`] hosts online, a random sample of
/// [`SAMPLE`] is read first, and when it settles the question
/// ([`sample_settles`]: a fleet at rest, or nearly) boot goes by it, so that
/// booting costs a constant number of requests whatever the fleet's size. A mixed
/// fleet (mid-rollout) is read in full, as before.
pub async fn read_online(s: &Session, service: &str, facts: &mut Facts) -> Result<(), ZkError> {
    use rand::seq::SliceRandom;
    let mut hosts = zk::children(&s.client, &s.layout.current_service(service)).await?;
    hosts.retain(|h| *h != s.host);
    let mut counts = BTreeMap::new();
    if hosts.len() > 2 * SAMPLE {
        hosts.shuffle(&mut rand::thread_rng());
        count_versions(s, service, &hosts[..SAMPLE], &mut counts).await?;
        if sample_settles(&counts, &facts.failed) {
            tracing::debug!(sampled = SAMPLE, online = hosts.len(), "boot: the sample settles the popular version");
        } else {
            count_versions(s, service, &hosts[SAMPLE..], &mut counts).await?;
        }
    } else {
        count_versions(s, service, &hosts, &mut counts).await?;
    }
    facts.online = counts;
    let versions: Vec<String> = facts.online.keys().cloned().collect();
    for v in versions {
        match zk::get::<Release>(&s.client, &s.layout.release(service, &v)).await {
            Ok(Some((r, _, _))) => {
                facts.staged_at.insert(v, r.staged_at);
            }
            Ok(None) => {}
            // A version without a readable catalog entry loses ties; say why.
            Err(ZkError::Decode(err)) => tracing::warn!(error = %err, "skipping an unreadable catalog entry"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Adds the versions of `hosts`' registrations of `service` to `counts`, all read
/// at once; a registration gone meanwhile is not counted, an unreadable one skipped.
async fn count_versions(
    s: &Session,
    service: &str,
    hosts: &[String],
    counts: &mut BTreeMap<String, u32>,
) -> Result<(), ZkError> {
    let paths: Vec<String> = hosts.iter().map(|h| s.layout.current_host(service, h)).collect();
    let reads = futures_util::future::join_all(paths.iter().map(|p| zk::get::<Current>(&s.client, p))).await;
    for read in reads {
        match read {
            Ok(Some((c, _, _))) => *counts.entry(c.version).or_default() += 1,
            Ok(None) => {}
            Err(ZkError::Decode(err)) => tracing::warn!(error = %err, "skipping an unreadable registration"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(online: &[(&str, u32)], failed: Option<&str>, last: Option<&str>, staged: Option<&str>) -> Facts {
        Facts {
            online: online.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
            staged_at: [("1", "2026-01-01T00:00:00Z"), ("2", "2026-02-01T00:00:00Z"), ("3", "2026-03-01T00:00:00Z")]
                .iter()
                .map(|(v, t)| (v.to_string(), t.to_string()))
                .collect(),
            failed: failed.map(str::to_string).into_iter().collect(),
            last_active: last.map(str::to_string),
            staged: staged.map(str::to_string),
        }
    }

    fn pick(f: &Facts) -> Option<(String, Reason)> {
        choose(f)
    }

    #[test]
    fn a_sample_settles_only_a_clear_majority() {
        let counts = |v: &[(&str, u32)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
        let none = BTreeSet::new();
        assert!(sample_settles(&counts(&[("1", 32)]), &none));
        assert!(sample_settles(&counts(&[("1", 29), ("2", 3)]), &none));
        assert!(!sample_settles(&counts(&[("1", 28), ("2", 4)]), &none));
        assert!(!sample_settles(&counts(&[("1", 16), ("2", 16)]), &none));
        assert!(!sample_settles(&counts(&[]), &none));
        // The majority's version failed here: the rest is read before choosing.
        let failed = BTreeSet::from(["1".to_string()]);
        assert!(!sample_settles(&counts(&[("1", 30), ("2", 2)]), &failed));
    }

    #[test]
    fn most_popular_wins() {
        let f = facts(&[("1", 3), ("2", 1)], None, Some("2"), Some("2"));
        assert_eq!(pick(&f), Some(("1".into(), Reason::Popular)));
    }

    #[test]
    fn ties_go_to_the_most_recently_staged() {
        let f = facts(&[("1", 2), ("3", 2), ("2", 1)], None, None, None);
        assert_eq!(pick(&f), Some(("3".into(), Reason::Popular)));
    }

    #[test]
    fn none_online_uses_last_active_then_staged() {
        assert_eq!(pick(&facts(&[], None, Some("2"), Some("3"))), Some(("2".into(), Reason::LastActive)));
        assert_eq!(pick(&facts(&[], None, None, Some("3"))), Some(("3".into(), Reason::Staged)));
        assert_eq!(pick(&facts(&[], None, None, None)), None);
    }

    #[test]
    fn a_release_that_failed_here_is_never_chosen() {
        // v2 is where most of the fleet is, but it failed on this host: the next best.
        assert_eq!(
            pick(&facts(&[("2", 3), ("1", 1)], Some("2"), Some("1"), Some("2"))),
            Some(("1".into(), Reason::Popular))
        );
        assert_eq!(pick(&facts(&[("2", 3)], Some("2"), Some("1"), Some("2"))), Some(("1".into(), Reason::LastActive)));
        assert_eq!(pick(&facts(&[("2", 3)], Some("2"), None, Some("2"))), None);
    }
}
