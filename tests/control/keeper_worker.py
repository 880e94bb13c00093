"""A fake vnicd worker for tests/control/keeper.rs.

Run by the keeper as `python3 keeper_worker.py MODE`. It speaks the
worker's side of the keeper's protocol (sd_notify datagrams on
$NOTIFY_SOCKET, the descriptor store, SIGUSR1/SIGUSR2 for a succession) and
appends what it was given and what happened to it, one JSON object per
line, to $FAKE_DIR/events.

Every run keeps a memfd named "state" in the store: it reads what the
previous run wrote there, then writes "written by PID".

Modes:
  serve    READY=1, then WATCHDOG=1 every 100 ms until SIGTERM.
  exit2    exits with status 2 before READY=1.
  crash    READY=1, then exits with status 3 after 50 ms.
  hang     READY=1, then never a WATCHDOG=1.
  succeed  READY=1, then X_VNICD_SUCCESSOR=$FAKE_SUCCESSOR ("self": this
           interpreter) and serve; SIGUSR1: exit at once; SIGUSR2: serve on.
           The successor (VNICD_SUCCESSION=1) serves.
On SIGTERM every mode sends STOPPING=1 and exits 0.
"""

import json
import os
import resource
import signal
import socket
import sys
import time

DIR = os.environ["FAKE_DIR"]
MODE = sys.argv[1]
PID = os.getpid()
KEYS = [
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "VNICD_WORKER",
    "VNICD_KEEPER",
    "VNICD_RESTARTS",
    "VNICD_LAST_EXIT",
    "VNICD_SUCCESSION",
]


def record(event, **extra):
    line = json.dumps({"pid": PID, "event": event, "t": time.monotonic(), **extra})
    fd = os.open(os.path.join(DIR, "events"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (line + "\n").encode())
    os.close(fd)


def notify(text, fds=()):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(os.environ["NOTIFY_SOCKET"])
    if fds:
        socket.send_fds(s, [text.encode()], list(fds))
    else:
        s.send(text.encode())
    s.close()


def open_fds_from(first):
    """What the descriptors open at `first` and above (not given by the
    keeper) are: readlink of /proc/self/fd/N."""
    found = []
    for fd in range(first, first + 64):
        try:
            os.fstat(fd)
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return found


def sigblk():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    return None


def on_term(_signo, _frame):
    record("term")
    notify("STOPPING=1\nSTATUS=stopping")
    sys.exit(0)


def on_usr1(_signo, _frame):
    record("usr1")
    os._exit(0)


def on_usr2(_signo, _frame):
    record("usr2")


def main():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)
    count = int(os.environ.get("LISTEN_FDS", "0"))
    names = os.environ.get("LISTEN_FDNAMES", "").split(":") if count else []
    given = {}
    for i, name in enumerate(names):
        given[name] = os.pread(3 + i, 256, 0).decode(errors="replace").rstrip("\0")
    record(
        "start",
        mode=MODE,
        env={k: os.environ.get(k) for k in KEYS},
        fds=given,
        leaked=open_fds_from(3 + count),
        sigblk=sigblk(),
    )
    if MODE == "exit2":
        sys.exit(2)
    state = 3 + names.index("state") if "state" in names else os.memfd_create("state")
    os.ftruncate(state, 0)
    os.pwrite(state, f"written by {PID}".encode(), 0)
    notify("FDSTOREREMOVE=1\nFDNAME=state")
    notify("FDSTORE=1\nFDNAME=state", [state])
    notify("READY=1\nSTATUS=serving")
    record("ready")
    if MODE == "crash":
        time.sleep(0.05)
        sys.exit(3)
    if MODE == "hang":
        while True:
            time.sleep(1)
    if MODE == "succeed" and os.environ.get("VNICD_SUCCESSION") != "1":
        path = os.environ["FAKE_SUCCESSOR"]
        notify("X_VNICD_SUCCESSOR=" + (sys.executable if path == "self" else path))
        record("asked")
    while True:
        notify("WATCHDOG=1")
        time.sleep(0.1)


main()
