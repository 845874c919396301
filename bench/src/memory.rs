//! Resident memory of a child process, read from `/proc`.

use std::time::Duration;

use anyhow::{Context, Result};

/// Resident set size now, in MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmRSS:").map(kib_to_mib)
}

/// The highest resident set size the process has had, in MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmHWM:").map(kib_to_mib)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Follows a process's peak RSS until it exits: `/proc` forgets it then, so
/// the last reading (every 10 ms) stands for the peak.
pub struct PeakWatch {
    task: tokio::task::JoinHandle<f64>,
}

impl PeakWatch {
    pub fn start(pid: u32) -> Self {
        let task = tokio::spawn(async move {
            let mut peak = 0.0_f64;
            while let Ok(now) = peak_rss_mib(pid) {
                peak = peak.max(now);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        });
        Self { task }
    }

    /// The peak seen; call once the process has exited.
    pub async fn finish(self) -> f64 {
        self.task.await.unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let now = rss_mib(pid).expect("VmRSS");
        let peak = peak_rss_mib(pid).expect("VmHWM");
        assert!(now > 0.0 && peak >= now, "rss {now} MiB, peak {peak} MiB");
    }
}
