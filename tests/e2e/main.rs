//! End-to-end tests: real guests (Debian 6.1 kernel under QEMU 11 with
//! vfio-user-pci) with the card attached. Each test runs scenario scripts
//! from this directory inside guests, one guest per script; see
//! `vnic_tests::e2e`.
//!
//! Needs the environment from `qemu/setup.sh` (tests/run.sh runs it first).

use vnic_tests::e2e::{run_guests, run_scenario, run_scenario_with_host, Outcome};

/// The guest sees the PF and two VFs as PCIe Ethernet functions with our IDs,
/// BARs, MSI-X and the PCIe capability; vnic.ko binds all three, receives a
/// card-raised MSI-X interrupt on each, and unloads.
#[test]
fn foundation_guest_enumerates_card_and_driver_gets_msix_interrupt() {
    let out = run_scenario("foundation");
    let shown = [
        "Ethernet controller",
        "Region ",
        "MSI-X:",
        "Express (v2)",
        "vnic",
        "E2E-FAIL",
    ];
    show_and_check(&out, &shown);
}

/// vnic.ko refuses a device whose ID register is wrong (QEMU's edu device
/// bound through new_id), cleanly and without touching it.
#[test]
fn driver_refuses_a_device_that_is_not_a_vnic() {
    let out = run_scenario("probe-reject");
    for line in out.lines_with(&["vnic", "E2E-"]) {
        println!("guest: {}", line.trim_end());
    }
    out.assert_success();
}

/// Console lines worth showing from data-path scenarios: every check, ping
/// round trips, iperf3 summaries, transfer rates and counters.
const DATAPATH_LINES: [&str; 9] = [
    "E2E-",
    "round-trip",
    "sender",
    "receiver",
    "MiB/s",
    "VM2VM-",
    "fn_spoof_drops",
    "_packets:",
    "_drops:",
];

/// One guest, two VFs with two vNICs each: the driver creates four netdevs;
/// a vNIC of VF0 and one of VF1, each in its own network namespace, talk
/// through the card's switch: ARP, ping, iperf3 TCP, a 50 MiB transfer with
/// matching sha256, VLAN 10 and 20 isolated (VLAN 10 on both works), a
/// spoofed source MAC dropped and counted, per-queue counters, clean unload.
#[test]
fn datapath_one_guest_two_vfs_ping_tcp_vlan_isolation_and_spoof_check() {
    let out = run_scenario("datapath");
    show_and_check(&out, &DATAPATH_LINES);
}

/// Two guests (two QEMU processes) on one vnicd, VF0 in guest A and VF1 in
/// guest B: the card copies frames from one guest's memory into the
/// other's. B pings A, runs iperf3 TCP to A and sends A a 10 MiB file that
/// A sends back; the file A received hashes the same as the one B sent.
#[test]
fn vm_to_vm_two_guests_on_one_vnicd_ping_tcp_and_transfer() {
    let out = run_guests("vm2vm", &["vm2vm-a", "vm2vm-b"]);
    for (name, guest) in &out.guests {
        for line in guest.lines_with(&DATAPATH_LINES) {
            println!("{name}: {}", line.trim_end());
        }
    }
    if out.passed() {
        let sent = out.guest("vm2vm-b").value_after("VM2VM-SENT ");
        let received = out.guest("vm2vm-a").value_after("VM2VM-RECEIVED ");
        out.check(
            sent.is_some() && sent == received,
            &format!("B sent {sent:?}, A received {received:?}"),
        );
    }
    out.assert_success();
}

/// A guest asks the host to run vnicctl against its card at a moment of its
/// choosing and gets the output and exit status back over its second
/// serial port: `--version` (plumbing), a usage error (status 2), a command
/// other than vnicctl refused; `list` names vf0 and `vnics vf0 99` is
/// refused by the card (status 1). Every command shows in the host log.
#[test]
fn host_channel_runs_vnicctl_for_the_guest() {
    let out = run_scenario_with_host("host-channel");
    println!("--- host.log ---\n{}--- console ---", out.host);
    show_and_check(&out, &["E2E-", "host: ", "host$ "]);
    for command in ["vnicctl --version", "vnicctl list", "vnicctl vnics vf0 99"] {
        let logged = format!("] {command} -> rc ");
        assert!(
            out.host.contains(&logged),
            "{command:?} missing in the host log"
        );
    }
}

/// Console lines worth showing from the management scenarios.
const MGMT_LINES: [&str; 8] = [
    "E2E-",
    "host$ ",
    "RATE ",
    "PING-LOST",
    "round-trip",
    "packets transmitted",
    "sender",
    "receiver",
];

/// The host changes VF0's number of vNICs from 2 to 3 to 1 (and back to 2)
/// with vnicctl while the guest pings through vNIC 0: the driver adds and
/// removes netdevs on the card's configuration-change interrupt, the new
/// vNIC passes traffic, N above X is refused, and the ping loses nothing.
/// Before that, a capture of the switch taken during a ping is read back
/// with tcpdump and shows the ICMP echo requests and replies.
#[test]
fn vnic_count_changes_under_a_running_guest_and_capture_reads_back_with_tcpdump() {
    let out = run_scenario_with_host("mgmt-vnics");
    println!("--- host.log ---\n{}--- console ---", out.host);
    for line in out.lines_with(&MGMT_LINES) {
        println!("guest: {}", line.trim_end());
    }
    let pcap = out.logs.join("switch.pcap");
    let dump = std::process::Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&pcap)
        .output();
    let text = dump
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let requests = text
        .lines()
        .filter(|l| l.contains("ICMP echo request"))
        .count();
    let replies = text
        .lines()
        .filter(|l| l.contains("ICMP echo reply"))
        .count();
    println!("tcpdump -r switch.pcap: {requests} echo requests, {replies} replies");
    for l in text.lines().filter(|l| l.contains("ICMP")).take(4) {
        println!("  {l}");
    }
    let pings: usize = out
        .value_after("CAPTURE-PINGS ")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Checked before assert_success, which removes the logs on success.
    assert!(
        pings > 0 && requests >= pings && replies >= pings,
        "tcpdump read {requests} requests and {replies} replies of the guest's {pings} \
         pings ({dump:?}); logs kept in {}",
        out.logs.display()
    );
    out.assert_success();
}

/// A guest with the PF sets VF1's MAC, rate, link state, spoof check and
/// trust with `ip link set <pf> vf 1 ...` (admin mailbox); VF1's vNIC 0
/// reports the new MAC; iperf3 from VF1 stays within +-15 % of a 20 Mbit/s
/// TX policy, alone and with both of VF1's vNICs at once; an RX policy set
/// with vnicctl holds what VF0 receives.
#[test]
fn pf_sets_vf_mac_rate_and_link_and_rates_hold_their_policies() {
    let out = run_scenario_with_host("mgmt-pf");
    println!("--- host.log ---\n{}--- console ---", out.host);
    show_and_check(&out, &MGMT_LINES);
}

/// Console lines worth showing from the migration scenarios.
const MIGRATE_LINES: [&str; 11] = [
    "E2E-",
    "PING-LOST",
    "PING-GAP",
    "MIGRATE-RECOVERED",
    "host$ ",
    "[dmesg]",
    "packets transmitted",
    "sender",
    "receiver",
    "ifindexes",
    "tx+rx packets",
];

/// Runs migration scenario `name` (the launcher saves and restores the
/// guest when it prints VNIC-MIGRATE) with its host channel, prints the
/// launcher's step timings, the host commands and the scenario's checks,
/// and fails unless the launcher migrated and the scenario passed. One
/// migration test runs at a time, so the outages they print are not
/// another guest's load.
fn migration(name: &str) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    let out = run_scenario_with_host(name);
    let run_log = std::fs::read_to_string(out.logs.join("run.log")).unwrap_or_default();
    for line in run_log
        .lines()
        .filter(|l| l.contains("run-guest: migration:"))
    {
        println!("{line}");
    }
    println!("--- host commands ---");
    for line in out.host.lines().filter(|l| l.contains(" -> rc ")) {
        println!("{line}");
    }
    println!("--- console ---");
    let migrated = run_log.contains("migration: host-side outage");
    // Checked before show_and_check, which removes the logs on success.
    assert!(
        migrated || out.status != Some(0),
        "the launcher never migrated the guest; logs kept in {}",
        out.logs.display()
    );
    show_and_check(&out, &MIGRATE_LINES);
    println!("{name}: {:.0} s", t0.elapsed().as_secs_f64());
}

/// savevm/loadvm onto a new vnicd started from the exported configuration
/// (VCT entries included): the driver notices the lost PCI configuration
/// and recovers; a ping every 0.1 s and an iperf3 TCP stream go on (same
/// processes, same ifindexes), and the card's per-queue counters, now read
/// from the contexts in guest memory, continue from where they were.
#[test]
fn migration_savevm_loadvm_keeps_ping_tcp_ifindexes_and_queue_counters() {
    migration("migrate");
}

/// migrate to a file and -incoming, with VF0's state restored onto VF2
/// (vnicctl remap vf0=vf2, QEMU given vf2.sock at VF0's PCI address).
#[test]
fn migration_to_file_onto_another_vf_keeps_ping_tcp_and_queue_counters() {
    migration("migrate-file-vf2");
}

/// vnic.ko recovery=1 and a new vnicd without VCT entries: after loadvm the
/// driver restores PCI config and waits; no traffic, frozen counters, no
/// queue error, until the host writes each VCT entry (vnicctl vct set with
/// the function's vnic_bat); then ping and TCP go on.
#[test]
fn migration_recovery_1_without_vct_stays_stopped_until_vct_set() {
    migration("migrate-stopped");
}

/// Prints the console lines with any of `shown`, then fails unless the
/// scenario passed and made at least one check.
fn show_and_check(out: &Outcome, shown: &[&str]) {
    for line in out.lines_with(shown) {
        println!("guest: {}", line.trim_end());
    }
    out.assert_success();
    assert!(
        out.console.contains("E2E-OK"),
        "the scenario made no checks"
    );
}
