//! Scale benchmark (docs/performance.md, "Scale"): vnicd (release build)
//! with 64 VFs × 8 queue pairs, every VF attached by a fake guest over
//! vfio-user as QEMU and vnic.ko would (memory mapped, MSI-X eventfds, all
//! eight queue pairs running with posted receive buffers), then left idle.
//!
//! Reports: start-up to ready (vnicd's own measure and the time until its
//! ready line reached us), the time to attach everything, vnicd's CPU use
//! while idle (from /proc/PID/stat over a window), its resident memory
//! before and after attaching and after the idle window, and that a frame
//! still crosses from VF0 to VF63 afterwards.
//!
//! Run: `cargo bench -p vnic-tests --bench scale` (add `-- --idle-seconds
//! S`, default 10).

use std::path::Path;
use std::time::{Duration, Instant};

use vnic_tests::guest::{frame, mac, Guest};
use vnic_tests::{release_binaries, wait_for, TempDir, Vnicd};

const VFS: u16 = 64;
const QUEUE_PAIRS: u16 = 8;

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ')'.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

fn idle_seconds() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--idle-seconds")
        .and_then(|i| args.get(i + 1))
        .map_or(10, |s| s.parse().expect("--idle-seconds S"))
}

fn main() {
    let idle = idle_seconds();
    let vnicd_bin = release_binaries().join("vnicd");
    let logs = TempDir::new("scale");
    let (out, log) = (logs.0.join("vnicd.out"), logs.0.join("vnicd.log"));
    let (vfs, qps) = (VFS.to_string(), QUEUE_PAIRS.to_string());
    let t0 = Instant::now();
    let vnicd = Vnicd::start_binary_logged(
        &vnicd_bin,
        &["--vfs", &vfs, "--queue-pairs", &qps, "--vnics-per-vf", &qps],
        &out,
        &log,
        Duration::from_secs(10),
    );
    let seen_ready = t0.elapsed();
    let pid = vnicd.pid();
    let rss_start = rss_kib(pid);

    let t1 = Instant::now();
    let mut guests: Vec<Guest> = (0..VFS)
        .map(|n| Guest::attach(&vnicd, &format!("vf{n}"), QUEUE_PAIRS))
        .collect();
    let attach = t1.elapsed();
    let rss_attached = rss_kib(pid);

    // Let the attach traffic settle, then measure a quiet window.
    std::thread::sleep(Duration::from_secs(1));
    let ticks0 = cpu_ticks(pid);
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle));
    let ticks = cpu_ticks(pid) - ticks0;
    let window = w0.elapsed().as_secs_f64();
    let cpu_percent = ticks as f64 / clock_ticks_per_second() as f64 / window * 100.0;
    let rss_idle = rss_kib(pid);

    // Still a working card: VF0 vNIC 0 → VF63 vNIC 0.
    let last = VFS as usize - 1;
    let (src, dst) = (mac(1, 0), mac(VFS as u8, 0));
    guests[0].send(&[frame(dst, src, 200)]);
    wait_for("the frame at VF63", Duration::from_secs(10), || {
        !guests[last].received(0).is_empty()
    });

    println!(
        "vnicd scale benchmark: {VFS} VFs x {QUEUE_PAIRS} queue pairs, all attached and running"
    );
    println!("  {}", vnicd.ready_line);
    println!(
        "  start-up: ready line seen after {} ms (spawn to line)",
        seen_ready.as_millis()
    );
    println!(
        "  attach of {VFS} fake guests ({} queue pairs): {} ms",
        VFS * QUEUE_PAIRS,
        attach.as_millis()
    );
    println!("  idle CPU over {window:.1} s: {ticks} ticks = {cpu_percent:.2} % of one core");
    println!(
        "  resident memory: {rss_start} KiB at start, {rss_attached} KiB attached, {rss_idle} KiB after the idle window"
    );
    println!("  a frame VF0 -> VF63 after the idle window: delivered");
    print_log_tail(Path::new(&log));
}

/// vnicd's warnings, if any: an idle card should have logged none.
fn print_log_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    println!("  vnicd log: {warnings} warning/error lines");
}
