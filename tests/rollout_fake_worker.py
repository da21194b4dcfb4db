"""A stand-in rollout worker (a real process) for the engine tests: behaves by the host's name prefix.

``ok-*`` succeeds, ``fail-*`` fails, ``crash-*`` exits without a result, ``hang-*`` never ends, ``slow-*``
takes 2 s. Each run appends ``<host> <pid> start|end`` to ``$FAKE_WORKER_LOG``.
"""

import json
import os
import sys
import time


def main() -> None:
    host, out = sys.argv[1], sys.argv[2]
    log = os.environ["FAKE_WORKER_LOG"]
    with open(log, "a") as fh:
        fh.write(f"{host} {os.getpid()} start\n")
    kind = host.split("-")[0]
    if kind == "hang":
        time.sleep(3600)
    if kind == "slow":
        time.sleep(2)
    if kind == "crash":
        print("tierfleet: crashed before writing a result", flush=True)
        sys.exit(3)
    result = {"host": host, "status": "ok" if kind in ("ok", "slow") else "failed",
              "before": {"model": "m-1", "runtime": "r", "ops": "o"},
              "after": {"model": "m-2" if kind in ("ok", "slow") else "m-1", "runtime": "r", "ops": "o"}}
    if kind == "fail":
        print("tierfleet: health gate failed: no answer", flush=True)
        result["rolled_back"] = True
    with open(out, "w") as fh:
        json.dump(result, fh)
    with open(log, "a") as fh:
        fh.write(f"{host} {os.getpid()} end\n")


if __name__ == "__main__":
    main()
