//! What the kernel says of a process: CPU time per side (pilot, the
//! simulated proxies), page faults, and `/proc/PID/status` fields.

use super::*;

/// CPU time this process has used so far (user and system), from
/// `/proc/self/task/*/schedstat` (nanoseconds on CPU): the simulated proxies'
/// threads (named `xds-client`) apart from the rest (pilot and the driver).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    pub(crate) pilot: Duration,
    pub(crate) clients: Duration,
}

impl Cpu {
    pub(crate) fn total(&self) -> Duration {
        self.pilot + self.clients
    }

    pub(crate) fn since(&self, before: Cpu) -> Cpu {
        Cpu {
            pilot: self.pilot.saturating_sub(before.pilot),
            clients: self.clients.saturating_sub(before.clients),
        }
    }
}

pub(crate) fn process_cpu() -> Result<Cpu> {
    let mut cpu = Cpu::default();
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        // Either file is gone when the thread ended meanwhile.
        let (Ok(stat), Ok(name)) = (
            std::fs::read_to_string(path.join("schedstat")),
            std::fs::read_to_string(path.join("comm")),
        ) else {
            continue;
        };
        let nanos = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .context("reading schedstat")?;
        let side = if name.trim_end() == CLIENT_THREAD {
            &mut cpu.clients
        } else {
            &mut cpu.pilot
        };
        *side += Duration::from_nanos(nanos);
    }
    Ok(cpu)
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10):
/// memory touched for the first time, or again after the allocator gave it
/// back.
pub(crate) fn minor_faults() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .context("reading minflt from /proc/self/stat")
}

/// A `kB` field (`VmRSS:`) of `/proc/PID/status`.
pub(crate) fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}
