"""Keep one lab host running: systemd-nspawn in a fresh time namespace, restarted on reboot.

Run as ``python3 -I supervisor.py HOST_DIR -- NSPAWN_ARGV...`` by :mod:`tierfleet.lab.host`, already
inside the host's cgroup (so ``cgroup.kill`` ends it together with the container). Standard library
only: it never imports tierfleet.

- Each boot runs under ``unshare --time --boottime -<uptime-1>`` so ``/proc/uptime`` in the host
  starts near zero (pyinfra's ``server.reboot`` compares uptimes).
- nspawn exits with 133 when the container reboots; the supervisor starts it again unless
  ``HOST_DIR/stop`` exists.
- SIGTERM is passed to nspawn, which turns it into an orderly halt of the container.
"""

import os
import signal
import subprocess
import sys

REBOOT_RC = 133


def main(argv):
    host_dir, sep, nspawn = argv[0], argv[1], argv[2:]
    if sep != "--" or not nspawn:
        sys.stderr.write("usage: supervisor.py HOST_DIR -- NSPAWN_ARGV...\n")
        return 2
    stop_file = os.path.join(host_dir, "stop")
    child = None

    def on_term(signum, _frame):
        open(stop_file, "a").close()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while True:
        with open("/proc/uptime") as fh:
            offset = max(0, int(float(fh.read().split()[0])) - 1)
        child = subprocess.Popen(["unshare", "--time", "--boottime", f"-{offset}", *nspawn])
        with open(os.path.join(host_dir, "nspawn.pid"), "w") as fh:
            fh.write(f"{child.pid}\n")
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:
                continue
        if rc == REBOOT_RC and not os.path.exists(stop_file):
            continue
        return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
