//! What the ZooKeeper server says about its load: the four-letter commands `mntr`
//! (server-wide counters), `cons` (per-connection packet counts, with the session
//! id) and `crst` (reset of the per-connection counts).
//!
//! Per connection, `recved` counts every packet the client sent (requests and
//! pings) and `sent` every packet the server sent (one reply per request, plus the
//! watch notifications). So `sent - recved` is the number of notifications.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends four-letter command `cmd` to the server on 127.0.0.1:`port`.
pub fn four_letter(port: u16, cmd: &str) -> anyhow::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(cmd.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `mntr` as key → value (numbers only).
pub fn mntr(port: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(parse_mntr(&four_letter(port, "mntr")?))
}

fn parse_mntr(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The counters of one client connection, from `cons`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn {
    /// The session id.
    pub sid: i64,
    /// Packets received from the client (requests and pings).
    pub recved: u64,
    /// Packets sent to the client (replies and notifications).
    pub sent: u64,
}

impl Conn {
    /// Watch notifications sent: packets beyond one reply per packet received.
    pub fn notifications(&self) -> u64 {
        self.sent.saturating_sub(self.recved)
    }
}

/// The per-connection counters of every connection with a session.
pub fn cons(port: u16) -> anyhow::Result<Vec<Conn>> {
    Ok(parse_cons(&four_letter(port, "cons")?))
}

/// Resets the per-connection counters (`crst`).
pub fn crst(port: u16) -> anyhow::Result<()> {
    four_letter(port, "crst").map(drop)
}

fn parse_cons(text: &str) -> Vec<Conn> {
    text.lines().filter_map(parse_con_line).collect()
}

fn parse_con_line(line: &str) -> Option<Conn> {
    let inner = line.split_once('(')?.1.trim_end().strip_suffix(')')?;
    let mut conn = Conn::default();
    let mut has_sid = false;
    for kv in inner.split(',') {
        let Some((k, v)) = kv.split_once('=') else { continue };
        match k.trim() {
            "recved" => conn.recved = v.parse().ok()?,
            "sent" => conn.sent = v.parse().ok()?,
            "sid" => {
                conn.sid = u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()? as i64;
                has_sid = true;
            }
            _ => {}
        }
    }
    has_sid.then_some(conn)
}

/// Sums of the counters of many connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Connections summed.
    pub connections: u64,
    /// Packets received (requests and pings).
    pub recved: u64,
    /// Notifications sent.
    pub notifications: u64,
}

/// Sums the connections whose session is not in `exclude` (the bench's own).
pub fn totals(conns: &[Conn], exclude: &[i64]) -> Totals {
    conns.iter().filter(|c| !exclude.contains(&c.sid)).fold(Totals::default(), |t, c| Totals {
        connections: t.connections + 1,
        recved: t.recved + c.recved,
        notifications: t.notifications + c.notifications(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cons() {
        let text = " /127.0.0.1:41234[1](queued=0,recved=12,sent=15,sid=0x10000a1b2c3d0001,lop=GETD,est=1700000000000,to=10000,lcxid=0xb,lzxid=0x2a,lresp=1700000000100,llat=0,minlat=0,avglat=0,maxlat=2)\n \
                    /127.0.0.1:41240[0](queued=0,recved=1,sent=0)\n\n";
        let conns = parse_cons(text);
        assert_eq!(conns, vec![Conn { sid: 0x10000a1b2c3d0001, recved: 12, sent: 15 }]);
        assert_eq!(conns[0].notifications(), 3);
        let t = totals(&conns, &[]);
        assert_eq!((t.connections, t.recved, t.notifications), (1, 12, 3));
        assert_eq!(totals(&conns, &[0x10000a1b2c3d0001]).connections, 0);
    }

    #[test]
    fn parses_mntr() {
        let m = parse_mntr("zk_version\t3.8.0-1, built on\nzk_packets_received\t120\nzk_watch_count\t7\n");
        assert_eq!(m.get("zk_packets_received"), Some(&120.0));
        assert_eq!(m.get("zk_watch_count"), Some(&7.0));
        assert!(!m.contains_key("zk_version"));
    }
}
