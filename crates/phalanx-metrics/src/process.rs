//! CPU and memory of this process, read from procfs (Linux); `None` elsewhere.

use parking_lot::Mutex;
use tokio::time::Instant;

/// Clock ticks per second of `/proc/self/stat` times: 100 on every Linux platform Phalanx targets.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: u64 = 4096;

/// CPU use between two readings.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    last: Mutex<Option<(Instant, u64)>>,
}

impl Default for CpuMeter {
    fn default() -> Self {
        CpuMeter { last: Mutex::new(cpu_ticks().map(|t| (Instant::now(), t))) }
    }
}

impl CpuMeter {
    /// Percent of one core used since the previous reading (or since this meter was made).
    pub(crate) fn percent(&self) -> Option<f64> {
        let ticks = cpu_ticks()?;
        let now = Instant::now();
        let mut last = self.last.lock();
        let result = last.and_then(|(at, before)| {
            let wall = now.saturating_duration_since(at).as_secs_f64();
            (wall > 0.0).then(|| (ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND) / wall * 100.0)
        });
        *last = Some((now, ticks));
        result
    }
}

fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in bytes.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfs_readings_are_plausible_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        assert!(rss_bytes().unwrap() > 1024 * 1024);
        let meter = CpuMeter::default();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let busy = meter.percent().unwrap();
        assert!((0.0..=200.0 * 100.0).contains(&busy), "{busy}");
    }
}
