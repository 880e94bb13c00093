#!/usr/bin/env python3
"""Where a ping's round trip goes: the steps of `tests/bench/guest.sh --trace`.

Usage: tests/bench/latency.py CONSOLE_LOG [HOST_TRACE]

CONSOLE_LOG is a traced case's console log (tests/bench/guest-net.sh with
BENCH_TRACE): the guest kernel's events of every echo, client namespace A
to server namespace B and back, on the guest's monotonic clock. Each echo
is cut into steps:

  ping sendto -> A transmit        A's stack, from the syscall to the driver
  A transmit -> interrupt (B)      the NIC, request: doorbell, the device's
                                   work, the interrupt's way into the guest
  interrupt -> B receive           the interrupt handler and NAPI to the
                                   stack's receive
  B receive -> B transmit          B's stack: the echo reply
  B transmit -> interrupt (A)      the NIC, reply
  interrupt -> A receive
  A receive -> ping recvfrom       A's stack, up to the syscall's return

A case with no interrupt between transmit and receive (veth) shows the
NIC steps as "transmit -> receive".

HOST_TRACE (vnic cases) is the host's trace of vnicd's and QEMU's syscalls
and scheduling during the same echoes, on the host's monotonic clock (not
the guest's: the two are not joined). From it:

  register write message -> vnicd awake
                        a vCPU thread's sendmsg of a posted register write
                        (a doorbell, receive tail or rearm that the page
                        did not take) to the return of vnicd's epoll_wait
  vnicd awake -> interrupt eventfd write
                        in a turn that took a message and raised an
                        interrupt: the card's work up to its first write to
                        an MSI-X eventfd
  eventfd write -> QEMU main loop's read
                        to QEMU's main loop reading it (it then injects the
                        interrupt into a vCPU)
  vnicd / QEMU main loop: wake-up -> running
                        how long the thread waited for a host CPU after it
                        was woken (the host has as many cores as the guest
                        has vCPUs)

Prints the median, mean and minimum of each step in microseconds.
"""

import re
import statistics
import sys

LINE = re.compile(r"^\s*(.*)-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+):\s+(.*)$")


def events(lines, prefix=""):
    """(time in µs, comm, tid, text) of each trace line behind prefix."""
    out = []
    for line in lines:
        if prefix:
            if not line.startswith(prefix):
                continue
            line = line[len(prefix):]
        m = LINE.match(line.rstrip("\r\n"))
        if m:
            comm, tid, _cpu, ts, text = m.groups()
            out.append((float(ts) * 1e6, comm.strip(), int(tid), text))
    out.sort(key=lambda e: e[0])
    return out


def field(text, name):
    m = re.search(r"\b%s=(\S+)" % name, text)
    return m.group(1) if m else None


def kind(text):
    if text.startswith("sys_sendto("):
        return "send"
    if text.startswith("sys_recvfrom ->"):
        return "recv"
    return text.split(":", 1)[0]


def stats(name, values, width=34):
    if not values:
        return "%-*s %8s" % (width, name, "-")
    return "%-*s %8.0f %8.0f %8.0f" % (
        width, name, statistics.median(values), statistics.mean(values),
        min(values))


def guest_echoes(evs):
    """One dict of step times per echo the trace holds whole."""
    echoes = []
    i = 0
    n = len(evs)
    while i < n:
        t, comm, _tid, text = evs[i]
        if not (comm == "ping" and kind(text) == "send"):
            i += 1
            continue
        marks = {"send": t}
        a = b = None
        want = "x1"
        j = i + 1
        while j < n:
            t2, comm2, _t, text2 = evs[j]
            k = kind(text2)
            if k == "send" and comm2 == "ping":
                break
            dev, length = field(text2, "dev"), field(text2, "len")
            if want == "x1" and k == "net_dev_start_xmit" and length == "98":
                a, marks["x1"], want = dev, t2, "r1"
            elif want in ("r1", "r2") and k == "irq_handler_entry":
                marks.setdefault("i" + want[1], t2)
            elif want == "r1" and k == "netif_receive_skb" and length == "84" \
                    and dev != a:
                b, marks["r1"], want = dev, t2, "x2"
            elif want == "x2" and k == "net_dev_start_xmit" and dev == b \
                    and length == "98":
                marks["x2"], want = t2, "r2"
            elif want == "r2" and k == "netif_receive_skb" and dev == a \
                    and length == "84":
                marks["r2"], want = t2, "recv"
            elif want == "recv" and k == "recv" and comm2 == "ping":
                marks["recv"] = t2
                echoes.append(marks)
                break
            j += 1
        i = j
    return echoes


def guest_report(echoes):
    steps = []
    irqs = all("i1" in e and "i2" in e for e in echoes)

    def col(name, f):
        steps.append((name, [f(e) for e in echoes]))

    def direction(src, dst, x, i, r):
        if irqs:
            col("%s transmit -> interrupt (%s)" % (src, dst), lambda e: e[i] - e[x])
            col("interrupt -> %s receive" % dst, lambda e: e[r] - e[i])
        else:
            col("%s transmit -> %s receive" % (src, dst), lambda e: e[r] - e[x])

    col("ping sendto -> A transmit", lambda e: e["x1"] - e["send"])
    direction("A", "B", "x1", "i1", "r1")
    col("B receive -> B transmit (reply)", lambda e: e["x2"] - e["r1"])
    direction("B", "A", "x2", "i2", "r2")
    col("A receive -> ping recvfrom", lambda e: e["recv"] - e["r2"])
    col("total (sendto -> recvfrom)", lambda e: e["recv"] - e["send"])
    return steps


def host_report(evs):
    """The host's side of the doorbells and interrupts in the trace."""
    def who(comm):
        if comm.startswith("CPU ") and comm.endswith("/TCG"):
            return "vcpu"
        if comm.startswith("vnicd"):
            return "vnicd"
        if comm.startswith(("qemu-system", "ld-linux")):
            return "main"
        return "other"

    def fd(text):
        m = re.match(r"sys_\w+\(fd: (?:0x)?([0-9a-f]+)", text)
        return int(m.group(1), 16) if m else None

    def pid_of(text, key):
        m = re.search(r"\b%s=(\d+)" % key, text)
        return int(m.group(1)) if m else None

    # The threads: vnicd's event loop and QEMU's main loop (by their
    # syscalls).
    loop = {w: None for w in ("vnicd", "main")}
    for _t, comm, tid, text in evs:
        w = who(comm)
        if w in loop and loop[w] is None and text.startswith(
                ("sys_epoll_wait", "sys_ppoll")):
            loop[w] = tid

    door, turn, irq, rq = [], [], [], {"vnicd": [], "main": []}
    preempted = {"vnicd": 0, "main": 0}
    sent = {}
    woke = {}
    pending_door = []
    turn_start = turn_msg = turn_irq = None
    pending_irq = []
    for t, comm, tid, text in evs:
        w = who(comm)
        if text.startswith("sched_wakeup:"):
            p = pid_of(text, "pid")
            for name, l in loop.items():
                if p == l:
                    woke[name] = t
            continue
        if text.startswith("sched_switch:"):
            nxt, prev = pid_of(text, "next_pid"), pid_of(text, "prev_pid")
            for name, l in loop.items():
                if nxt == l and name in woke:
                    rq[name].append(t - woke.pop(name))
                if prev == l and re.search(r"prev_state=R", text):
                    preempted[name] += 1
            continue
        if w == "vcpu" and text.startswith("sys_sendmsg("):
            sent[tid] = t
        elif w == "vcpu" and text.startswith("sys_sendmsg -> 0x24"):
            # A posted 4-byte register write: a doorbell, rx tail or rearm.
            # (An exit whose entry came before the trace began is skipped.)
            s0 = sent.pop(tid, None)
            if s0 is not None:
                pending_door.append(s0)
        elif w == "vnicd" and tid == loop["vnicd"]:
            if re.match(r"sys_epoll_p?wait ->", text):
                for s0 in pending_door:
                    door.append(t - s0)
                pending_door = []
                turn_start, turn_msg, turn_irq = t, False, None
            elif text.startswith("sys_recvmsg -> 0x") and not text.endswith("fff5"):
                turn_msg = True
            elif text.startswith("sys_write(") and fd(text) not in (1, 2):
                pending_irq.append(t)
                if turn_irq is None:
                    turn_irq = t
            elif re.match(r"sys_epoll_p?wait\(", text) and turn_start is not None:
                if turn_msg and turn_irq is not None:
                    turn.append(turn_irq - turn_start)
                turn_start = None
        elif w == "main" and tid == loop["main"] and text.startswith("sys_read ->"):
            # The main loop's first read after the write (within 2 ms: a
            # write to an eventfd QEMU does not poll is not an interrupt).
            irq.extend(t - s0 for s0 in pending_irq if t - s0 < 2000)
            pending_irq = []
    steps = [
        ("register write message -> vnicd awake", door),
        ("vnicd awake -> interrupt eventfd write", turn),
        ("eventfd write -> QEMU main loop's read", irq),
        ("vnicd: wake-up -> running", rq["vnicd"]),
        ("QEMU main loop: wake-up -> running", rq["main"]),
    ]
    return steps, preempted


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.split("\n\n")[1])
    with open(sys.argv[1], errors="replace") as f:
        console = f.readlines()
    rtts = [float(m.group(1)) for line in console
            for m in [re.search(r"^PING .*time=([\d.]+) ms", line)] if m]
    echoes = guest_echoes(events(console, "TRACE "))
    print("guest: %d echoes traced whole, ping's own average %.3f ms"
          % (len(echoes), statistics.mean(rtts) if rtts else float("nan")))
    if not echoes:
        sys.exit(1)
    print("%-34s %8s %8s %8s" % ("step (µs)", "median", "mean", "min"))
    for name, values in guest_report(echoes):
        print(stats(name, values))
    if len(sys.argv) == 3:
        with open(sys.argv[2], errors="replace") as f:
            steps, preempted = host_report(events(f))
        print("host, during the echoes (µs)")
        for name, values in steps:
            print(stats(name, values, 40) + "  (%d)" % len(values))
        print("preempted while runnable: vnicd %d times, QEMU's main loop %d"
              % (preempted["vnicd"], preempted["main"]))


if __name__ == "__main__":
    main()
