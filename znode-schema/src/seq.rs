//! Names of sequential znodes: `<prefix><10-digit sequence>`.
//!
//! Order is the sequence suffix, never the whole name: tickets carry their host id
//! as a prefix (`web-01-0000000042`), so a host can find its own ticket after a lost
//! reply to `create`, and `b-…0001` must sort before `a-…0002`.

use std::fmt;

/// Splits `name` into its prefix (everything before the last '-') and sequence.
fn split_seq(name: &str) -> Option<(&str, u64)> {
    let (prefix, digits) = name.rsplit_once('-')?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((prefix, digits.parse().ok()?))
}

/// A sequential name with a fixed prefix, such as `event-0000000012`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqName {
    /// The sequence number ZooKeeper appended.
    pub seq: u64,
}

impl SeqName {
    /// Parses `<prefix><seq>`; `prefix` includes its trailing '-'.
    pub fn parse(name: &str, prefix: &str) -> Option<Self> {
        let rest = name.strip_prefix(prefix)?;
        let (_, seq) = split_seq(&format!("x-{rest}"))?;
        Some(SeqName { seq })
    }
}

/// A deploy entry's name, `deploy-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeployName {
    /// Position in the deploy order queue: lowest is the head.
    pub seq: u64,
}

impl DeployName {
    /// Parses `deploy-0000000042`; anything else is `None`.
    pub fn parse(name: &str) -> Option<Self> {
        SeqName::parse(name, crate::layout::DEPLOY_PREFIX).map(|s| DeployName { seq: s.seq })
    }

    /// Parses the last segment of a full path such as `/dc/deploy/deploy-0000000042`.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::parse(path.rsplit('/').next()?)
    }
}

impl fmt::Display for DeployName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:010}", crate::layout::DEPLOY_PREFIX, self.seq)
    }
}

/// A ticket's name, `<host>-<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TicketName {
    /// The host that created the ticket.
    pub host: String,
    /// The sequence number: queue order.
    pub seq: u64,
}

impl TicketName {
    /// Parses `web-01-0000000042`; `None` when there is no 10-digit suffix or the
    /// host part is not a valid host id.
    pub fn parse(name: &str) -> Option<Self> {
        let (host, seq) = split_seq(name)?;
        crate::name::validate_host(host).ok()?;
        Some(TicketName { host: host.into(), seq })
    }

    /// Parses the last segment of a full path.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::parse(path.rsplit('/').next()?)
    }
}

impl fmt::Display for TicketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:010}", self.host, self.seq)
    }
}

impl PartialOrd for TicketName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TicketName {
    /// By sequence; the host breaks ties only to keep the order total.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.seq, &self.host).cmp(&(other.seq, &other.host))
    }
}

/// Parses ticket names from a children listing and sorts them in queue order;
/// names that are not tickets are skipped.
pub fn sorted_tickets<S: AsRef<str>>(children: &[S]) -> Vec<TicketName> {
    let mut out: Vec<_> = children.iter().filter_map(|c| TicketName::parse(c.as_ref())).collect();
    out.sort();
    out
}

/// Parses deploy entry names from a children listing and sorts them, head first.
pub fn sorted_deploys<S: AsRef<str>>(children: &[S]) -> Vec<DeployName> {
    let mut out: Vec<_> = children.iter().filter_map(|c| DeployName::parse(c.as_ref())).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("web-01-0000000042" => Some(("web-01".to_string(), 42)); "dashed host")]
    #[test_case("a-0000000000" => Some(("a".to_string(), 0)); "zero")]
    #[test_case("a-12345678901" => Some(("a".to_string(), 12345678901)); "eleven digits")]
    #[test_case("a-000000001" => None; "nine digits")]
    #[test_case("-0000000001" => None; "no host")]
    #[test_case("a-00000000x1" => None; "not digits")]
    #[test_case("a0000000001" => None; "no dash")]
    #[test_case("a/b-0000000001" => None; "bad host")]
    fn ticket_parse(name: &str) -> Option<(String, u64)> {
        TicketName::parse(name).map(|t| (t.host, t.seq))
    }

    #[test]
    fn tickets_order_by_sequence_not_name() {
        let t = sorted_tickets(&["zeta-0000000001", "alpha-0000000003", "junk", "mid-0000000002"]);
        let hosts: Vec<_> = t.iter().map(|t| t.host.as_str()).collect();
        assert_eq!(hosts, ["zeta", "mid", "alpha"]);
    }

    #[test]
    fn ticket_round_trip() {
        let t = TicketName { host: "web-01".into(), seq: 42 };
        assert_eq!(TicketName::parse(&t.to_string()), Some(t));
    }

    #[test]
    fn deploy_names() {
        let d = sorted_deploys(&["deploy-0000000010", "deploy-0000000002", "other", "upgrading"]);
        assert_eq!(d, [DeployName { seq: 2 }, DeployName { seq: 10 }]);
        assert_eq!(d[0].to_string(), "deploy-0000000002");
        assert_eq!(DeployName::from_path("/dc/deploy/deploy-0000000002"), Some(d[0]));
        assert_eq!(DeployName::parse("deploy-00000002"), None);
    }

    #[test]
    fn seq_name() {
        assert_eq!(SeqName::parse("event-0000000009", "event-"), Some(SeqName { seq: 9 }));
        assert_eq!(SeqName::parse("evnt-0000000009", "event-"), None);
    }
}
