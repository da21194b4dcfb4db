"""Print first-converge and no-op rerun wall times of the tier deploy on N lab hosts (default N = 3 and 10).

Usage: sudo .venv/bin/python bench/deploy.py [N ...]

Each N gets a fresh lab (hosts cycle through the profiles; cpu-small is excluded since preflight refuses it),
the lab's artifacts are published first (outside the measurement), then
``pyinfra -y inventory/lab.py deploys/tier_basic.py`` runs twice. The second run must change nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tierfleet.lab.artifacts import publish_lab_artifacts  # noqa: E402
from tierfleet.lab.fleet import Lab  # noqa: E402
from tierfleet.lab.profiles import PROFILES  # noqa: E402

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
DEPLOYABLE = [name for name in PROFILES if name != "cpu-small"]


def _deploy(env: dict) -> tuple[float, int, str]:
    t0 = time.monotonic()
    run = subprocess.run([PYINFRA, "-y", "inventory/lab.py", "deploys/tier_basic.py"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1800)
    return time.monotonic() - t0, run.returncode, run.stdout + run.stderr


def _changes(out: str) -> str:
    line = next((ln for ln in out.splitlines() if "Grand total" in ln), "")
    cells = line.split()[2:6]
    return "/".join(cells) if cells else "?"


def bench(n: int) -> str:
    with tempfile.TemporaryDirectory(prefix="tierfleet-deploy-bench-") as tmp:
        env = {**os.environ, "TIERFLEET_LAB_DIR": f"{tmp}/lab", "TIERFLEET_LAB_ADDR_BASE": "127.0.0.200"}
        os.environ.update({k: env[k] for k in ("TIERFLEET_LAB_DIR", "TIERFLEET_LAB_ADDR_BASE")})
        lab = Lab(Path(env["TIERFLEET_LAB_DIR"]), log=lambda m: print(f"lab: {m}", file=sys.stderr))
        try:
            lab.up([(f"h{i + 1:02d}", DEPLOYABLE[i % len(DEPLOYABLE)]) for i in range(n)])
            publish_lab_artifacts(lab.root, REPO / ".cache" / "runtime", log=lambda m: None)
            first, rc1, out1 = _deploy(env)
            again, rc2, out2 = _deploy(env)
        finally:
            lab.down()
    status = "ok" if rc1 == rc2 == 0 and re.search(r"Grand total\s+\d+\s+-\s+-", out2) else "FAILED"
    return f"{n:>3} {first:>16.1f} {again:>12.1f} {again / first:>7.2f}  {_changes(out1):>22} {_changes(out2):>22}  {status}"


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:]] or [3, 10]
    print(f"{'N':>3} {'first converge s':>16} {'no-op rerun s':>12} {'ratio':>7}  "
          f"{'ops/ok/err/unchanged #1':>22} {'ops/ok/err/unchanged #2':>22}")
    for n in counts:
        print(bench(n), flush=True)
