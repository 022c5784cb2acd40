//! Rollout policy values: quorum (`N` or `P%`) and human durations (`10s`, `500ms`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, str::FromStr, time::Duration};

/// Why a policy value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The quorum is neither a count nor a percentage.
    #[error("invalid quorum {0:?}: expected a host count such as \"2\" or a percentage such as \"60%\"")]
    Quorum(String),
    /// A percentage above 100.
    #[error("invalid quorum {0:?}: a percentage must be between 0% and 100%")]
    Percent(String),
    /// A duration that humantime cannot read.
    #[error("invalid duration {value:?}: {reason} (examples: \"10s\", \"500ms\", \"2m\")")]
    Duration { value: String, reason: String },
    /// `max_parallel` of zero.
    #[error("max_parallel must be at least 1")]
    MaxParallel,
    /// An `on_failure` that is neither `rollback` nor `stay`.
    #[error("invalid on_failure {0:?}: expected \"rollback\" or \"stay\"")]
    OnFailure(String),
    /// An `on_halt` that is neither `stay` nor `rollback`.
    #[error("invalid on_halt {0:?}: expected \"stay\" or \"rollback\"")]
    OnHalt(String),
    /// `on_halt = rollback` with `on_failure = stay`: a release that cannot be undone.
    #[error("on_halt = \"rollback\" contradicts on_failure = \"stay\" (a release that cannot be undone)")]
    StayAndRollback,
    /// `auto_promote` without a canary phase.
    #[error("auto_promote needs a canary phase (canary of at least 1)")]
    AutoPromote,
}

/// The minimum number of online hosts that must stay up while hosts upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// An absolute number of hosts.
    Count(u32),
    /// A percentage of online plus upgrading hosts, rounded up.
    Percent(u32),
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum::Count(1)
    }
}

impl Quorum {
    /// The number of hosts that must stay online, given `total` online plus upgrading hosts.
    pub fn required(&self, total: u32) -> u32 {
        match *self {
            Quorum::Count(n) => n,
            Quorum::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

impl FromStr for Quorum {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: u32 = p.trim().parse().map_err(|_| PolicyError::Quorum(s.into()))?;
            if p > 100 {
                return Err(PolicyError::Percent(s.into()));
            }
            return Ok(Quorum::Percent(p));
        }
        t.parse().map(Quorum::Count).map_err(|_| PolicyError::Quorum(s.into()))
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Count(n) => write!(f, "{n}"),
            Quorum::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Quorum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Hand-written znodes may carry a bare number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u32),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Quorum::Count(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written the human way: `10s`, `500ms`, `2m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// From whole seconds.
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    /// From milliseconds.
    pub const fn millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
}

impl FromStr for HumanDuration {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| PolicyError::Duration { value: s.into(), reason: e.to_string() })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0)).map(|_| ())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.to_string().replace(' ', ""))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl From<HumanDuration> for Duration {
    fn from(h: HumanDuration) -> Duration {
        h.0
    }
}

/// How a rollout proceeds. Every field has a default, so `"policy": {}` is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Online hosts that must stay up while hosts upgrade. Default 1.
    #[serde(default)]
    pub quorum: Quorum,
    /// Hosts upgrading at once. Default 1.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u32,
    /// How long a host must stay healthy before it counts as upgraded. Default 0s.
    #[serde(default)]
    pub bake: HumanDuration,
    /// How long a started release may take to pass its health check. Default 60s.
    #[serde(default = "default_health_deadline")]
    pub health_deadline: HumanDuration,
    /// Host failures tolerated before the rollout halts. Default 0.
    #[serde(default)]
    pub max_failures: u32,
    /// The first this many hosts step, then the rollout pauses with reason `canary`
    /// until it is promoted. Default 0: no canary phase.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary: u32,
    /// After the canaries stepped, promote on its own once they stayed healthy this
    /// long. Default: wait for `deployctl promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote: Option<HumanDuration>,
    /// What a failed step does to its host. Default `rollback`.
    #[serde(default, skip_serializing_if = "OnFailure::is_default")]
    pub on_failure: OnFailure,
    /// A rollout that moves no host (no fence, no step ending) for this long, with no
    /// host stepping, halts with a reason. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<HumanDuration>,
    /// What a halt does to the hosts that already stepped. Default `stay`.
    #[serde(default, skip_serializing_if = "OnHalt::is_default")]
    pub on_halt: OnHalt,
}

/// What a rollout that halts does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHalt {
    /// Stop there for a human (the default).
    #[default]
    Stay,
    /// Move the hosts that already stepped back to the release they ran before, one
    /// fenced step at a time under the same quorum and slots.
    Rollback,
}

impl OnHalt {
    fn is_default(&self) -> bool {
        *self == OnHalt::Stay
    }
}

impl fmt::Display for OnHalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnHalt::Stay => "stay",
            OnHalt::Rollback => "rollback",
        })
    }
}

impl FromStr for OnHalt {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stay" => Ok(OnHalt::Stay),
            "rollback" => Ok(OnHalt::Rollback),
            other => Err(PolicyError::OnHalt(other.into())),
        }
    }
}

/// What a host whose step failed does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Go back to the release it ran before (the default).
    #[default]
    Rollback,
    /// Keep the new release (one that cannot be undone, such as a schema migration):
    /// the rollout halts for a human, who rolls forward.
    Stay,
}

impl OnFailure {
    fn is_default(&self) -> bool {
        *self == OnFailure::Rollback
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Stay => "stay",
        })
    }
}

impl FromStr for OnFailure {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rollback" => Ok(OnFailure::Rollback),
            "stay" => Ok(OnFailure::Stay),
            other => Err(PolicyError::OnFailure(other.into())),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_max_parallel() -> u32 {
    1
}

fn default_health_deadline() -> HumanDuration {
    HumanDuration::secs(60)
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            quorum: Quorum::default(),
            max_parallel: default_max_parallel(),
            bake: HumanDuration::default(),
            health_deadline: default_health_deadline(),
            max_failures: 0,
            canary: 0,
            auto_promote: None,
            on_failure: OnFailure::Rollback,
            progress_deadline: None,
            on_halt: OnHalt::Stay,
        }
    }
}

impl Policy {
    /// Checks values that serde accepts but the protocol cannot use.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_parallel == 0 {
            return Err(PolicyError::MaxParallel);
        }
        if self.auto_promote.is_some() && self.canary == 0 {
            return Err(PolicyError::AutoPromote);
        }
        if self.on_halt == OnHalt::Rollback && self.on_failure == OnFailure::Stay {
            return Err(PolicyError::StayAndRollback);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("2" => Ok(Quorum::Count(2)); "count")]
    #[test_case(" 3 " => Ok(Quorum::Count(3)); "spaces")]
    #[test_case("60%" => Ok(Quorum::Percent(60)); "percent")]
    #[test_case("100%" => Ok(Quorum::Percent(100)); "all")]
    #[test_case("101%" => Err(PolicyError::Percent("101%".into())); "over 100")]
    #[test_case("-1" => Err(PolicyError::Quorum("-1".into())); "negative")]
    #[test_case("half" => Err(PolicyError::Quorum("half".into())); "word")]
    #[test_case("" => Err(PolicyError::Quorum("".into())); "empty")]
    fn quorum_parse(s: &str) -> Result<Quorum, PolicyError> {
        s.parse()
    }

    #[test_case(Quorum::Count(3), 10 => 3; "count ignores total")]
    #[test_case(Quorum::Percent(50), 5 => 3; "rounds up")]
    #[test_case(Quorum::Percent(60), 5 => 3; "exact")]
    #[test_case(Quorum::Percent(0), 5 => 0; "zero")]
    #[test_case(Quorum::Percent(100), 0 => 0; "no hosts")]
    fn quorum_required(q: Quorum, total: u32) -> u32 {
        q.required(total)
    }

    #[test_case("10s" => Ok(Duration::from_secs(10)); "seconds")]
    #[test_case("500ms" => Ok(Duration::from_millis(500)); "millis")]
    #[test_case("2m 30s" => Ok(Duration::from_secs(150)); "compound")]
    #[test_case("0" => Ok(Duration::ZERO); "bare zero")]
    #[test_case("0s" => Ok(Duration::ZERO); "zero seconds")]
    fn durations(s: &str) -> Result<Duration, ()> {
        s.parse::<HumanDuration>().map(|h| h.0).map_err(|_| ())
    }

    #[test_case("ten"; "word")]
    #[test_case("10"; "no unit")]
    #[test_case(""; "empty")]
    #[test_case("-1s"; "negative")]
    fn bad_durations(s: &str) {
        let err = s.parse::<HumanDuration>().unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn durations_serialize_compactly() {
        for s in ["10s", "500ms", "0s", "2m30s", "1h"] {
            let d: HumanDuration = s.parse().unwrap();
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{s}\""));
        }
    }

    #[test]
    fn quorum_accepts_a_bare_number() {
        let q: Quorum = serde_json::from_str("4").unwrap();
        assert_eq!(q, Quorum::Count(4));
        assert_eq!(serde_json::to_string(&Quorum::Percent(60)).unwrap(), "\"60%\"");
    }

    #[test]
    fn empty_policy_takes_defaults() {
        let p: Policy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.health_deadline, HumanDuration::secs(60));
        let zero = Policy { max_parallel: 0, ..Policy::default() };
        assert_eq!(zero.validate(), Err(PolicyError::MaxParallel));
    }
}
