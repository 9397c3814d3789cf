//! Memory of this process, or of another by pid, from `/proc/<pid>/status`
//! (Linux; 0 elsewhere, or when the process is gone).

fn status_kib(field: &str) -> u64 {
    status_kib_at("/proc/self/status", field)
}

fn status_kib_at(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set size in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Resident set size now, in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Resident set size of process `pid` now, in KiB.
pub fn rss_kib_of(pid: u32) -> u64 {
    status_kib_at(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Peak resident set size of process `pid` so far (`VmHWM`), in KiB.
pub fn peak_rss_kib_of(pid: u32) -> u64 {
    status_kib_at(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// Starts the peak over from the current size (Linux ≥ 4.0: writing 5 to
/// `clear_refs` resets `VmHWM`), so a phase's peak leaves out what came
/// before it. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// KiB as MiB, for printing.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
