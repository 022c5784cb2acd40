//! Facts about processes and process groups, read from `/proc` when it is there.
//!
//! Zombies count as gone: a process that exited but was not reaped (for instance a
//! grandchild reparented to an init that does not reap) no longer runs anything.
//! Without `/proc`, `kill(pid, 0)` is the fallback, which counts zombies as alive.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::path::Path;

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// `R`, `S`, `D`, `Z`, ...
    state: char,
    /// The process group.
    pgrp: i32,
    /// Clock ticks since boot when the process started.
    start_time: u64,
}

fn has_proc() -> bool {
    Path::new("/proc/self/stat").exists()
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn running(s: &Stat) -> bool {
    !matches!(s.state, 'Z' | 'X' | 'x')
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    if has_proc() { stat(pid).is_some_and(|s| running(&s)) } else { kill(Pid::from_raw(pid), None).is_ok() }
}

/// When process `pid` started (clock ticks since boot), to tell it from a later process
/// that reused its pid. `None` without `/proc`.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// The process group of process `pid`, from `/proc`.
pub fn group_of(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.pgrp)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): start times count from boot,
/// so a record from another boot never names a process of this one.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// Whether any process of group `pgid` exists and is not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    if pgid < 2 {
        return false;
    }
    if !has_proc() {
        return killpg(Pid::from_raw(pgid), None).is_ok();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .any(|s| s.pgrp == pgid && running(&s))
}

/// Sends `signal` to every process of group `pgid`; a group that is already gone is fine.
/// Group ids below 2 are refused (`killpg(0)` would signal the sidecar's own group).
pub fn signal_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    if pgid < 2 {
        return Err(Errno::EINVAL);
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Err(Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// SIGKILLs a process group when dropped, unless [`GroupGuard::disarm`]ed: a command
/// abandoned half-way (timeout, cancelled future) leaves nothing behind.
#[derive(Debug)]
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    /// Guards group `pgid`.
    pub fn new(pgid: i32) -> Self {
        GroupGuard(Some(pgid))
    }

    /// Leaves the group alone from now on.
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = signal_group(pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        assert!(start_time(me).is_some());
        assert!(group_alive(nix::unistd::getpgrp().as_raw()));
    }

    #[test]
    fn a_reaped_child_is_gone_and_a_zombie_counts_as_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        wait_until(|| !alive(pid)); // a zombie until reaped
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn signal_group_ignores_missing_groups() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(signal_group(pid, Signal::SIGTERM), Ok(()));
        assert!(!group_alive(pid));
        assert_eq!(signal_group(0, Signal::SIGTERM), Err(Errno::EINVAL), "never our own group");
        assert!(!group_alive(0));
    }

    /// Polls `fact` for up to 10 seconds.
    pub(crate) fn wait_until(mut fact: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !fact() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "fact never became true");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
