"""Print lab up/down times and memory per host for N = 3 and 10 (same as ``tierfleet lab bench``).

Usage: sudo .venv/bin/python bench/lab.py [N ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tierfleet.lab.bench import run_bench  # noqa: E402

if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:]] or [3, 10]
    for line in run_bench(counts, log=lambda m: print(f"lab: {m}", file=sys.stderr)):
        print(line)
