"""pyinfra inventory of the local lab fleet: ``pyinfra inventory/lab.py deploys/x.py``.

Reads the lab's state file (``.lab/state.json`` at the repository root, or ``$TIERFLEET_LAB_DIR``)
written by ``tierfleet lab up``. Hosts are grouped by kind (``jetson``, ``cpu_servers``,
``gpu_nodes``); each carries its SSH data, its ``tier`` (from its profile), ``lab_profile`` and the
mirror URLs as the hosts see them (``apt_mirror_url``, ``apt_mirror_keyring``, ``artifacts_url``),
and the tierfleet keys the tier deploys read, so ``pyinfra inventory/lab.py deploys/tier_basic.py``
needs no extra flags (:func:`tierfleet.lab.inventory.tierfleet_data`):

- every host: ``artifact_store`` (the lab's store), ``model`` (the tiny ``tiny-llama`` Q8_0 that
  ``tierfleet lab publish`` puts there), ``model_version`` ``1``, ``health_timeout`` 60;
- GPU nodes: ``nvidia_repo`` / ``nvidia_repo_suite`` / ``nvidia_repo_key`` (the lab apt repository
  standing in for NVIDIA's CUDA repository) and ``nvidia_driver_branch`` (the profile's driver major);
- Jetsons: ``l4t_repo`` / ``l4t_repo_key`` (NVIDIA's Jetson layout on the lab mirror).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tierfleet.lab.inventory import inventory_from_state  # noqa: E402
from tierfleet.lab.state import read_state_for_inventory  # noqa: E402

_root, _state = read_state_for_inventory()
_groups = inventory_from_state(_root, _state)

jetson = _groups["jetson"]
cpu_servers = _groups["cpu_servers"]
gpu_nodes = _groups["gpu_nodes"]

del _root, _state, _groups
