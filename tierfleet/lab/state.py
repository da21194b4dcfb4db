"""Where the lab keeps its state, and the state file itself.

State dir: ``$TIERFLEET_LAB_DIR`` or ``.lab/`` at the repository root. It holds ``state.json``
(hosts, addresses, profiles, mirror port, faults), the SSH key, ``known_hosts``, ``ssh_config``
(with ``ControlPath``), per-host directories and the artifact store. The base system cache is
shared between state dirs: ``$TIERFLEET_LAB_CACHE`` or ``/var/cache/tierfleet-lab``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tierfleet.exceptions import ConfigError, LabError

STATE_VERSION = 1
#: host-side names inside every lab host (/etc/hosts) and the port the bridges listen on there
MIRROR_NAME = "mirror.lab"
ARTIFACTS_NAME = "artifacts.lab"
#: port 80, like a real mirror: services deployed into hosts keep their own ports (llama-server's 8080)
MIRROR_PORT_IN_HOST = 80
APT_URL = f"http://{MIRROR_NAME}/apt"
#: the same repository under another path: the source every host boots with (``tierfleet-lab.list``),
#: like a distribution mirror. Distinct from APT_URL so that a deploy may add APT_URL with its own
#: ``signed-by`` (the GPU stack's CUDA repository) without apt refusing two Signed-By for one source.
BASE_APT_URL = f"http://{MIRROR_NAME}/base"
ARTIFACTS_URL = f"http://{ARTIFACTS_NAME}/artifacts"
APT_KEYRING_IN_HOST = "/usr/share/keyrings/tierfleet-lab.gpg"
APT_SUITE = "lab"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def lab_dir() -> Path:
    env = os.environ.get("TIERFLEET_LAB_DIR")
    return Path(env).resolve() if env else repo_root() / ".lab"


def cache_dir() -> Path:
    env = os.environ.get("TIERFLEET_LAB_CACHE")
    return Path(env).resolve() if env else Path("/var/cache/tierfleet-lab")


def lab_id(path: Path) -> str:
    """Short id of a state dir: names its cgroups, network namespaces and firewall rules."""
    return "tfl" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:6]


@dataclass
class HostState:
    name: str
    profile: str
    address: str
    index: int


@dataclass
class LabState:
    hosts: dict[str, HostState] = field(default_factory=dict)
    mirror_port: int = 0
    faults: list[dict] = field(default_factory=list)
    #: things ``up`` changed on the machine and ``down`` puts back
    restore: dict = field(default_factory=dict)
    version: int = STATE_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str) -> "LabState":
        if data.get("version") != STATE_VERSION:
            raise ConfigError(source, "version", f"expected {STATE_VERSION}, got {data.get('version')!r}")
        hosts = {}
        for name, h in data.get("hosts", {}).items():
            try:
                hosts[name] = HostState(**h)
            except TypeError as exc:
                raise ConfigError(source, f"hosts.{name}", f"bad host entry: {exc}") from None
        return cls(hosts=hosts, mirror_port=int(data.get("mirror_port", 0)),
                   faults=list(data.get("faults", [])), restore=dict(data.get("restore", {})))


class StateStore:
    """Reads and writes ``state.json`` under an exclusive lock file."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else lab_dir()
        self.path = self.root / "state.json"

    def load(self) -> LabState:
        if not self.path.exists():
            return LabState()
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(str(self.path), "(file)", f"not readable JSON: {exc}") from None
        return LabState.from_json(data, str(self.path))

    def save(self, state: LabState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    @contextmanager
    def locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(f"another lab command holds {self.root / '.lock'}") from None
            yield


def read_state_for_inventory(root: Path | None = None) -> tuple[Path, LabState]:
    """The state a pyinfra inventory needs; a clear error when the lab is not up."""
    store = StateStore(root)
    state = store.load()
    if not state.hosts:
        raise LabError(f"no lab hosts in {store.path}: run `tierfleet lab up` first")
    return store.root, state
