//! End-to-end tests: real guests (Debian 6.1 kernel under QEMU 11 with
//! vfio-user-pci) with the card attached. Each test runs one scenario script
//! from this directory inside a guest; see `vnic_tests::e2e`.
//!
//! Needs the environment from `qemu/setup.sh` (tests/run.sh runs it first).

use vnic_tests::e2e::run_scenario;

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
    for line in out.lines_with(&shown) {
        println!("guest: {}", line.trim_end());
    }
    out.assert_success();
    assert!(
        out.console.contains("E2E-OK"),
        "the scenario made no checks"
    );
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
