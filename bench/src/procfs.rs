//! The footprint of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.

/// Memory and CPU of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Footprint {
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub hwm_kib: u64,
    /// User plus system CPU time so far, milliseconds.
    pub cpu_ms: f64,
    /// Threads.
    pub threads: u64,
}

/// Reads the footprint of process `pid`; `None` when it is gone.
pub fn footprint(pid: u32) -> Option<Footprint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = parse_status(&status);
    f.cpu_ms = parse_cpu_ms(&stat, ticks_per_second())?;
    Some(f)
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64
}

fn parse_status(text: &str) -> Footprint {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Footprint { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:"), cpu_ms: 0.0, threads: field("Threads:") }
}

/// utime + stime (fields 14 and 15 of `stat`, counted after the command name,
/// which may contain spaces and parentheses).
fn parse_cpu_ms(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let f = parse_status("Name:\tsidecar\nVmHWM:\t    9000 kB\nVmRSS:\t    8123 kB\nThreads:\t4\n");
        assert_eq!((f.rss_kib, f.hwm_kib, f.threads), (8123, 9000, 4));
        let stat = "42 (side car) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200";
        assert_eq!(parse_cpu_ms(stat, 100.0), Some(3000.0));
    }

    #[test]
    fn reads_this_process() {
        let f = footprint(std::process::id()).unwrap();
        assert!(f.rss_kib > 0 && f.hwm_kib >= f.rss_kib && f.threads >= 1);
    }
}
