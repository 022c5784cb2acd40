//! ZooKeeper's transaction log, read back after (or during) a test: the exact,
//! ordered history of every committed change, short-lived states included.
//!
//! Watches plus re-reads can miss a node that lives for less than a round trip;
//! the log cannot. Each member writes `<dataDir>/version-2/log.<zxid>` files:
//! a `FileHeader` (magic `ZKLG`, version, dbid), then per transaction a checksum
//! (Adler-32, as a long), the entry as a jute buffer (`TxnHeader`, the record of
//! its type, an optional digest) and an end-of-record byte `B`. Files are
//! preallocated with zeros: a zero length or a bad checksum ends the readable part.
//!
//! Ephemeral nodes vanish with their session's `closeSession` (and with session
//! expiry, logged the same way) without a delete of their own: [`replay`] tracks
//! the owner of every ephemeral node and deletes them there.
//!
//! In an ensemble every member logs what it acknowledged. [`read_cluster`] merges
//! the members' logs by zxid and keeps a transaction only when a majority logged it
//! (a committed transaction was logged by a quorum, and committed ones are never
//! truncated), so a proposal a dying leader logged alone is not mistaken for history.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One change of one node, as applied by ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The node was created with this data (`ephemeral`: owned by the session).
    Create {
        /// The full path (with the sequence suffix of sequential nodes).
        path: String,
        /// Its data.
        data: Vec<u8>,
        /// Whether it is ephemeral.
        ephemeral: bool,
    },
    /// The node was deleted (explicitly, or with its session).
    Delete {
        /// The path.
        path: String,
        /// Whether it went with its session (`closeSession`, expiry) rather than a delete.
        by_session: bool,
    },
    /// The node's data was set.
    SetData {
        /// The path.
        path: String,
        /// The new data.
        data: Vec<u8>,
    },
}

impl Op {
    /// The path concerned.
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. } | Op::Delete { path, .. } | Op::SetData { path, .. } => path,
        }
    }
}

/// One committed transaction: a single change, a whole multi, or a session's close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Its zxid (total order).
    pub zxid: i64,
    /// The leader's clock when it was proposed (ms since the epoch).
    pub time_ms: i64,
    /// The session that made it.
    pub session: i64,
    /// What it changed, in order (empty for session creation, errors, checks...).
    pub ops: Vec<Op>,
    /// Whether this was a multi transaction.
    pub multi: bool,
}

/// A raw transaction before ephemeral tracking: `CloseSession` is resolved by [`replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Raw {
    Ops(Vec<Op>, bool),
    CloseSession,
    Other,
}

#[derive(Debug, Clone)]
struct RawTxn {
    zxid: i64,
    time_ms: i64,
    session: i64,
    raw: Raw,
}

/// A jute reader over one buffer.
struct Jute<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Jute<'a> {
    fn new(b: &'a [u8]) -> Self {
        Jute { b, at: 0 }
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn int(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn long(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn boolean(&mut self) -> Option<bool> {
        Some(self.bytes(1)?[0] != 0)
    }
    fn buffer(&mut self) -> Option<Vec<u8>> {
        let n = self.int()?;
        if n < 0 {
            return Some(Vec::new());
        }
        Some(self.bytes(n as usize)?.to_vec())
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.buffer()?).ok()
    }
    fn acls(&mut self) -> Option<()> {
        let n = self.int()?;
        for _ in 0..n.max(0) {
            self.int()?;
            self.string()?;
            self.string()?;
        }
        Some(())
    }
}

// ZooDefs.OpCode values.
const CREATE: i32 = 1;
const DELETE: i32 = 2;
const SET_DATA: i32 = 5;
const MULTI: i32 = 14;
const CREATE2: i32 = 15;
const CREATE_CONTAINER: i32 = 19;
const DELETE_CONTAINER: i32 = 20;
const CREATE_TTL: i32 = 21;
const CLOSE_SESSION: i32 = -11;
const ERROR: i32 = -1;

/// Decodes the record of one operation of type `ty`; `Ok(None)` for types that
/// change no node (check, session creation...); `Err` for an error txn.
fn record(ty: i32, j: &mut Jute<'_>) -> Option<Result<Option<Op>, ()>> {
    Some(Ok(Some(match ty {
        CREATE | CREATE2 => {
            let path = j.string()?;
            let data = j.buffer()?;
            j.acls()?;
            let ephemeral = j.boolean()?;
            Op::Create { path, data, ephemeral }
        }
        CREATE_CONTAINER | CREATE_TTL => {
            let path = j.string()?;
            let data = j.buffer()?;
            Op::Create { path, data, ephemeral: false }
        }
        DELETE | DELETE_CONTAINER => Op::Delete { path: j.string()?, by_session: false },
        SET_DATA => Op::SetData { path: j.string()?, data: j.buffer()? },
        ERROR => return Some(Err(())),
        _ => return Some(Ok(None)),
    })))
}

fn parse_entry(entry: &[u8]) -> Option<RawTxn> {
    let mut j = Jute::new(entry);
    let session = j.long()?;
    let _cxid = j.int()?;
    let zxid = j.long()?;
    let time_ms = j.long()?;
    let ty = j.int()?;
    let raw = match ty {
        CLOSE_SESSION => Raw::CloseSession,
        MULTI => {
            let n = j.int()?;
            let mut ops = Vec::new();
            let mut failed = false;
            for _ in 0..n.max(0) {
                let ty = j.int()?;
                let data = j.buffer()?;
                match record(ty, &mut Jute::new(&data))? {
                    Ok(Some(op)) => ops.push(op),
                    Ok(None) => {}
                    Err(()) => failed = true,
                }
            }
            if failed { Raw::Other } else { Raw::Ops(ops, true) }
        }
        ty => match record(ty, &mut j)? {
            Ok(Some(op)) => Raw::Ops(vec![op], false),
            _ => Raw::Other,
        },
    };
    Some(RawTxn { zxid, time_ms, session, raw })
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Reads one log file up to its last complete, intact transaction.
fn read_file(bytes: &[u8]) -> Vec<RawTxn> {
    let mut out = Vec::new();
    let mut j = Jute::new(bytes);
    if j.bytes(4) != Some(b"ZKLG".as_slice()) || j.int().is_none() || j.long().is_none() {
        return out;
    }
    while let Some(crc) = j.long() {
        let Some(len) = j.int() else { break };
        if len <= 0 {
            break;
        }
        let Some(entry) = j.bytes(len as usize) else { break };
        if j.bytes(1) != Some(b"B".as_slice()) || adler32(entry) as i64 != crc {
            break;
        }
        match parse_entry(entry) {
            Some(t) => out.push(t),
            None => break,
        }
    }
    out
}

/// Every transaction logged under one data dir (`<dir>/version-2/log.*`), by zxid.
fn read_dir(data_dir: &Path) -> Vec<RawTxn> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir.join("version-2")) else { return out };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("log.") {
            if let Ok(bytes) = std::fs::read(e.path()) {
                out.extend(read_file(&bytes));
            }
        }
    }
    out.sort_by_key(|t| t.zxid);
    out.dedup_by_key(|t| t.zxid);
    out
}

/// The committed history of an ensemble (or one server) whose members keep their
/// data in `data_dirs`: transactions a majority of members logged, by zxid, with
/// ephemeral nodes deleted at their session's close.
pub fn read_cluster(data_dirs: &[std::path::PathBuf]) -> Vec<Txn> {
    let majority = data_dirs.len() / 2 + 1;
    let mut seen: BTreeMap<i64, (usize, RawTxn)> = BTreeMap::new();
    for d in data_dirs {
        for t in read_dir(d) {
            seen.entry(t.zxid).or_insert((0, t)).0 += 1;
        }
    }
    replay(seen.into_values().filter(|(n, _)| *n >= majority).map(|(_, t)| t))
}

/// Resolves session closes into deletes of the session's ephemeral nodes.
fn replay(raw: impl Iterator<Item = RawTxn>) -> Vec<Txn> {
    let mut owner: HashMap<String, i64> = HashMap::new();
    let mut out = Vec::new();
    for t in raw {
        let (ops, multi) = match t.raw {
            Raw::Ops(ops, multi) => {
                for op in &ops {
                    match op {
                        Op::Create { path, ephemeral: true, .. } => {
                            owner.insert(path.clone(), t.session);
                        }
                        Op::Delete { path, .. } => {
                            owner.remove(path);
                        }
                        _ => {}
                    }
                }
                (ops, multi)
            }
            Raw::CloseSession => {
                let mut gone: Vec<String> =
                    owner.iter().filter(|(_, s)| **s == t.session).map(|(p, _)| p.clone()).collect();
                gone.sort();
                for p in &gone {
                    owner.remove(p);
                }
                (gone.into_iter().map(|path| Op::Delete { path, by_session: true }).collect(), false)
            }
            Raw::Other => continue,
        };
        if !ops.is_empty() {
            out.push(Txn { zxid: t.zxid, time_ms: t.time_ms, session: t.session, ops, multi });
        }
    }
    out
}

/// Keeps only the changes under `root` (and the transactions that still change something).
pub fn under(history: Vec<Txn>, root: &str) -> Vec<Txn> {
    let prefix = format!("{}/", root.trim_end_matches('/'));
    history
        .into_iter()
        .filter_map(|mut t| {
            t.ops.retain(|op| op.path().starts_with(&prefix) || op.path() == root);
            (!t.ops.is_empty()).then_some(t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_matches_the_reference() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
    }

    #[test]
    fn a_truncated_file_yields_what_is_intact() {
        let mut entry = Vec::new();
        entry.extend(7i64.to_be_bytes()); // session
        entry.extend(1i32.to_be_bytes()); // cxid
        entry.extend(42i64.to_be_bytes()); // zxid
        entry.extend(1000i64.to_be_bytes()); // time
        entry.extend(DELETE.to_be_bytes());
        entry.extend(2i32.to_be_bytes());
        entry.extend(b"/a");
        let mut file = b"ZKLG".to_vec();
        file.extend(2i32.to_be_bytes());
        file.extend(0i64.to_be_bytes());
        file.extend((adler32(&entry) as i64).to_be_bytes());
        file.extend((entry.len() as i32).to_be_bytes());
        file.extend(&entry);
        file.push(b'B');
        let whole = read_file(&file);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].zxid, 42);
        assert_eq!(whole[0].raw, Raw::Ops(vec![Op::Delete { path: "/a".into(), by_session: false }], false));
        assert!(read_file(&file[..file.len() - 3]).is_empty());
        file.extend([0u8; 64]);
        assert_eq!(read_file(&file).len(), 1);
    }
}
