//! Process CPU and memory from `/proc/self/stat` and `/proc/self/status` (Linux only; elsewhere
//! the samples are absent and the metrics have no series).
//!
//! CPU % is the process's user + system time over the wall time since the previous sample (or
//! since the sampler was created), in percent of one core, like the Python service's `psutil` figure.
//! Samples closer than [`MIN_INTERVAL`] reuse the previous figure so that two scrapers polling at
//! once do not see noise from a few milliseconds of wall time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Linux reports `/proc` CPU times in USER_HZ, which is 100 on every architecture Linux
/// supports for user space (the kernel's own HZ may differ; USER_HZ is fixed ABI).
pub const USER_HZ: f64 = 100.0;

/// Samples closer together than this reuse the previous CPU figure.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// CPU and memory at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// CPU time over wall time, percent of one core (may exceed 100 on several cores).
    pub cpu_percent: f64,
    /// Resident set size, bytes (VmRSS, the current value; the Python service reported the peak).
    pub rss_bytes: u64,
}

/// Keeps the previous CPU reading to compute the next percentage.
#[derive(Debug)]
pub struct ProcessSampler {
    state: Mutex<SamplerState>,
}

#[derive(Debug)]
struct SamplerState {
    at: Instant,
    ticks: Option<u64>,
    percent: f64,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        ProcessSampler::new()
    }
}

impl ProcessSampler {
    /// A sampler whose first percentage covers the time since now.
    pub fn new() -> Self {
        ProcessSampler {
            state: Mutex::new(SamplerState {
                at: Instant::now(),
                ticks: read_cpu_ticks(),
                percent: 0.0,
            }),
        }
    }

    /// The current figures, or `None` where `/proc` cannot be read.
    pub fn sample(&self) -> Option<ProcessSample> {
        let rss_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_rss_bytes(&s))?;
        let ticks = read_cpu_ticks()?;
        let now = Instant::now();
        let cpu_percent = match self.state.lock() {
            Ok(mut st) => {
                let wall = now.duration_since(st.at);
                if wall >= MIN_INTERVAL || st.ticks.is_none() {
                    st.percent = cpu_percent(st.ticks.unwrap_or(ticks), ticks, wall);
                    st.at = now;
                    st.ticks = Some(ticks);
                }
                st.percent
            }
            Err(_) => 0.0,
        };
        Some(ProcessSample {
            cpu_percent,
            rss_bytes,
        })
    }
}

fn read_cpu_ticks() -> Option<u64> {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_cpu_ticks(&s))
}

/// `utime + stime` (fields 14 and 15) from `/proc/<pid>/stat`. The command name (field 2) is
/// in parentheses and may contain spaces, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// `VmRSS` from `/proc/<pid>/status`, in bytes.
pub fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line.split_whitespace().skip(1);
    let n: u64 = it.next()?.parse().ok()?;
    let unit = it.next().unwrap_or("kB");
    let mult = match unit {
        "kB" => 1024,
        "mB" | "MB" => 1024 * 1024,
        _ => 1,
    };
    Some(n.saturating_mul(mult))
}

/// CPU percent from two tick readings `wall` apart.
pub fn cpu_percent(before: u64, after: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    after.saturating_sub(before) as f64 / USER_HZ / secs * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "4242 (marketprism (st) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 12 0 99 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\tx\nVmHWM:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads: 3\n";
        assert_eq!(parse_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(parse_rss_bytes("Name: x\n"), None);
    }

    #[test]
    fn percent_of_one_core() {
        assert_eq!(cpu_percent(100, 150, Duration::from_secs(1)), 50.0);
        assert_eq!(cpu_percent(100, 500, Duration::from_secs(2)), 200.0);
        assert_eq!(cpu_percent(100, 150, Duration::ZERO), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let s = ProcessSampler::new();
        if std::path::Path::new("/proc/self/stat").exists() {
            let sample = s.sample().unwrap();
            assert!(sample.rss_bytes > 0);
            assert!(sample.cpu_percent >= 0.0);
        }
    }
}
