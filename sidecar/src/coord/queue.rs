//! This host's ticket in `staging/<service>/`: the queue of hosts that downloaded
//! and verified the staged release (SPEC step 2, last part).
//!
//! The ticket is ephemeral sequential and named `<host>-<seq>`, so after a lost
//! reply to `create` the host finds its ticket again by its prefix instead of
//! creating a second one.

use crate::coord::session::Session;
use crate::coord::zk::{self, ZkError};
use znode_schema::{Ticket, TicketName, encode, seq::sorted_tickets, time};
use zookeeper_client as zkc;

/// The tickets of `service`, in queue order.
pub async fn tickets(s: &Session, service: &str) -> Result<Vec<TicketName>, ZkError> {
    Ok(sorted_tickets(&zk::children(&s.client, &s.layout.staging(service)).await?))
}

/// This host's tickets owned by this session (normally zero or one).
async fn own(s: &Session, service: &str) -> Result<Vec<(TicketName, zkc::Stat)>, ZkError> {
    let mut out = Vec::new();
    for t in tickets(s, service).await?.into_iter().filter(|t| t.host == s.host) {
        let path = s.layout.ticket(service, &t);
        match s.client.check_stat(&path).await {
            Ok(Some(stat)) if stat.ephemeral_owner == s.id() => out.push((t, stat)),
            Ok(_) => {}
            Err(e) => return Err(ZkError::call("exists", path, e)),
        }
    }
    Ok(out)
}

/// This host's ticket owned by this session, if any (one taken over from an earlier
/// session of this host included): a recovered step drops it when it commits.
pub async fn mine(s: &Session, service: &str) -> Result<Option<TicketName>, ZkError> {
    Ok(own(s, service).await?.into_iter().next().map(|(t, _)| t))
}

/// Returns this host's ticket for `version`, creating it if needed. Tickets of
/// this session for another version are deleted first.
pub async fn ensure(s: &Session, service: &str, version: &str) -> Result<TicketName, ZkError> {
    for (t, _) in own(s, service).await? {
        let path = s.layout.ticket(service, &t);
        let (data, _) = match s.client.get_data(&path).await {
            Ok(d) => d,
            Err(zkc::Error::NoNode) => continue,
            Err(e) => return Err(ZkError::call("get", path, e)),
        };
        match znode_schema::decode::<Ticket>(&path, &data) {
            Ok(ticket) if ticket.version == version => return Ok(t),
            _ => delete(s, service, &t).await?,
        }
    }
    let ticket = Ticket { host: s.host.clone(), version: version.into(), at: time::now() };
    let prefix = s.layout.ticket_prefix(service, &s.host);
    let acl = s.acl(&prefix);
    match s.client.create(&prefix, &encode(&ticket), &acl.options(zkc::CreateMode::EphemeralSequential)).await {
        Ok((_, seq)) => Ok(TicketName { host: s.host.clone(), seq: seq.into_i64() as u64 }),
        Err(zkc::Error::ConnectionLoss) => {
            // The create may have landed: look for it by our prefix before retrying.
            match own(s, service).await?.into_iter().next() {
                Some((t, _)) => Ok(t),
                None => Err(ZkError::call("create", prefix, zkc::Error::ConnectionLoss)),
            }
        }
        Err(e) => Err(ZkError::call("create", prefix, e)),
    }
}

/// Deletes a ticket of this host; an absent one is fine.
pub async fn delete(s: &Session, service: &str, t: &TicketName) -> Result<(), ZkError> {
    let path = s.layout.ticket(service, t);
    match s.client.delete(&path, None).await {
        Ok(()) | Err(zkc::Error::NoNode) => Ok(()),
        Err(e) => Err(ZkError::call("delete", path, e)),
    }
}
