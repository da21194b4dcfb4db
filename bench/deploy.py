"""Print first-converge and no-op rerun wall times of the tier deploy on N lab hosts (default N = 3 and 10).

Usage: sudo .venv/bin/python bench/deploy.py [N ...]

Each N gets a fresh lab on ``.201`` onwards of the address block (``$TIERFLEET_LAB_ADDR_BASE``'s /24; hosts cycle through the profiles; cpu-small is excluded since preflight refuses it),
the lab's artifacts are published first (outside the measurement), then
``pyinfra -y inventory/lab.py deploys/tier_basic.py`` runs twice. The second run must change nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tierfleet.lab.artifacts import publish_lab_artifacts  # noqa: E402
from tierfleet.lab.fleet import Lab  # noqa: E402
from tierfleet.lab.profiles import PROFILES  # noqa: E402
from tierfleet.lab.runner import grand_total, run_pyinfra  # noqa: E402
from tierfleet.lab.spec import block_address  # noqa: E402

DEPLOYABLE = [name for name in PROFILES if name != "cpu-small"]


def _deploy(lab_dir: Path) -> tuple[float, int, dict]:
    t0 = time.monotonic()
    run = run_pyinfra("-y", "inventory/lab.py", "deploys/tier_basic.py", lab_dir=lab_dir, timeout=1800)
    try:
        total = grand_total(run.stdout)
    except ValueError:  # pyinfra stopped before its results table
        total = {}
    return time.monotonic() - t0, run.returncode, total


def _changes(total: dict) -> str:
    return "/".join(str(total[k]) for k in ("hosts", "success", "error", "no_change")) if total else "?"


def bench(n: int) -> str:
    with tempfile.TemporaryDirectory(prefix="tierfleet-deploy-bench-") as tmp:
        lab_dir = Path(tmp) / "lab"
        os.environ.update(TIERFLEET_LAB_DIR=str(lab_dir), TIERFLEET_LAB_ADDR_BASE=block_address(200))
        lab = Lab(lab_dir, log=lambda m: print(f"lab: {m}", file=sys.stderr))
        try:
            lab.up([(f"h{i + 1:02d}", DEPLOYABLE[i % len(DEPLOYABLE)]) for i in range(n)])
            publish_lab_artifacts(lab.root, REPO / ".cache" / "runtime", log=lambda m: None)
            first, rc1, total1 = _deploy(lab.root)
            again, rc2, total2 = _deploy(lab.root)
        finally:
            lab.down()
    unchanged = bool(total2) and total2["success"] == total2["error"] == 0
    status = "ok" if rc1 == rc2 == 0 and unchanged else "FAILED"
    return f"{n:>3} {first:>16.1f} {again:>12.1f} {again / first:>7.2f}  {_changes(total1):>22} {_changes(total2):>22}  {status}"


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:]] or [3, 10]
    print(f"{'N':>3} {'first converge s':>16} {'no-op rerun s':>12} {'ratio':>7}  "
          f"{'ops/ok/err/unchanged #1':>22} {'ops/ok/err/unchanged #2':>22}")
    for n in counts:
        print(bench(n), flush=True)
