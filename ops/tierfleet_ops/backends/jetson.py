"""NVIDIA Jetson: nvpmodel power mode by NAME, jetson_clocks, GPU devfreq, INA3221 power rails.

Mode ids differ per board, so modes are named in policies and mapped to ids by parsing
``nvpmodel -p --verbose``. jetson_clocks' own settings are saved with ``--store`` before the first
change and put back with ``--restore`` on stop. A mode switch follows the safe order
jetson_clocks off -> ``nvpmodel -m ID`` -> jetson_clocks on again; a switch can take CPUs
offline (Orin 15 W: cores 4-11), so the daemon recomputes pinning afterwards.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from ..errors import CommandError, UnavailableError
from ..knobs import Change, Knob, Skipped, sysfs_knob
from ..settings import Setting, boolean, int_range
from ..settings import name as mode_name
from ..sysfs import Sysfs
from .base import Backend, HostContext

log = logging.getLogger(__name__)

GPU_OF_NODES = ("gv11b", "gp10b", "ga10b", "gb10b", "gpu")
UNKNOWN = "unknown"

_MODEL_RE = re.compile(r"POWER_MODEL:\s*ID=(\d+)\s+NAME=(\S+)")
_DEFAULT_RE = re.compile(r"PM_CONFIG:\s*DEFAULT=(\S+?)\((\d+)\)")
# /etc/nvpmodel.conf lines; numbers bounded so a garbled file cannot make int() refuse or a list explode
_CONF_MODE_RE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d{1,6})\s+NAME=(\S+)\s*>")
_CONF_CPU_RE = re.compile(r"CPU_ONLINE\s+CORE_(\d{1,6})\s+(\d+)")
_CONF_DEFAULT_RE = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d{1,6})\s*>")


def parse_nvpmodel_modes(text: str) -> dict[str, int]:
    """Mode names to ids from ``nvpmodel -p --verbose`` (lines may carry an ``NVPM VERB:`` prefix).

    >>> parse_nvpmodel_modes("NVPM VERB: POWER_MODEL: ID=0 NAME=MAXN\\nNVPM VERB: POWER_MODEL: ID=1 NAME=15W")
    {'MAXN': 0, '15W': 1}
    """
    return {m.group(2): int(m.group(1)) for m in _MODEL_RE.finditer(text)}


def parse_nvpmodel_default(text: str) -> tuple[str, int] | None:
    """The default mode from ``PM_CONFIG: DEFAULT=NAME(ID)``.

    >>> parse_nvpmodel_default("NVPM VERB: PM_CONFIG: DEFAULT=15W(1)")
    ('15W', 1)
    """
    m = _DEFAULT_RE.search(text)
    return (m.group(1), int(m.group(2))) if m else None


def parse_nvpmodel_query(text: str) -> tuple[str, int | None] | None:
    """The active mode from ``nvpmodel -q``: ``NV Power Mode: NAME`` then the id on its own line.

    >>> parse_nvpmodel_query("NV Power Mode: 15W\\n1\\n")
    ('15W', 1)
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("NV Power Mode:"):
            mode = ln.split(":", 1)[1].strip()
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            return mode, int(nxt) if nxt.isdigit() else None
    return None


def parse_nvpmodel_conf(text: str) -> dict[int, dict[str, Any]]:
    """``/etc/nvpmodel.conf`` blocks: id -> {"name", "cpu_offline": [cpu numbers]}.

    >>> conf = "< POWER_MODEL ID=1 NAME=15W >\\nCPU_ONLINE CORE_4 0\\nCPU_ONLINE CORE_0 1\\n"
    >>> parse_nvpmodel_conf(conf)
    {1: {'name': '15W', 'cpu_offline': [4]}}
    """
    out: dict[int, dict[str, Any]] = {}
    cur: dict[str, Any] | None = None
    for raw in text.splitlines():
        ln = raw.strip()
        m = _CONF_MODE_RE.match(ln)
        if m:
            cur = {"name": m.group(2), "cpu_offline": []}
            out[int(m.group(1))] = cur
            continue
        if ln.startswith("<"):
            cur = None
            continue
        m = _CONF_CPU_RE.match(ln)
        if m and cur is not None and m.group(2) == "0":
            cur["cpu_offline"].append(int(m.group(1)))
    return out


def parse_nvpmodel_conf_default(text: str) -> int | None:
    """The default mode id of ``/etc/nvpmodel.conf``, from its ``< PM_CONFIG DEFAULT=N >`` line.

    >>> parse_nvpmodel_conf_default("< POWER_MODEL ID=0 NAME=MAXN >\\n\\n< PM_CONFIG DEFAULT=2 >\\n")
    2
    >>> parse_nvpmodel_conf_default("# < PM_CONFIG DEFAULT=1 > only in a comment") is None
    True
    """
    for raw in text.splitlines():
        m = _CONF_DEFAULT_RE.match(raw.strip())
        if m:
            return int(m.group(1))
    return None


def find_gpu_devfreq(sysfs: Sysfs) -> str | None:
    """The devfreq device whose ``device/of_node/name`` is a Jetson GPU (gv11b, ga10b ...)."""
    for dev in sysfs.listdir("class/devfreq"):
        node = sysfs.read(f"class/devfreq/{dev}/device/of_node/name")
        if node is not None and node.rstrip("\x00") in GPU_OF_NODES:
            return dev
    return None


def read_rails(sysfs: Sysfs) -> dict[str, float]:
    """INA3221 rail power in W by rail name (JetPack 5+ hwmon, or JetPack 4 iio)."""
    rails: dict[str, float] = {}
    for drv in ("bus/i2c/drivers/ina3221", "bus/i2c/drivers/ina3221x"):
        for dev in sysfs.listdir(drv):
            base = f"{drv}/{dev}"
            for hw in sysfs.listdir(f"{base}/hwmon"):
                d = f"{base}/hwmon/{hw}"
                for n in (1, 2, 3, 4):
                    label = sysfs.read(f"{d}/in{n}_label")
                    mv, ma = sysfs.read(f"{d}/in{n}_input"), sysfs.read(f"{d}/curr{n}_input")
                    if label and mv and ma and mv.isdigit() and ma.isdigit():
                        rails[label] = int(mv) * int(ma) / 1e6
            for iio in sysfs.listdir(base):
                if not iio.startswith("iio:device"):
                    continue
                d = f"{base}/{iio}"
                for n in (0, 1, 2):
                    label, mw = sysfs.read(f"{d}/rail_name_{n}"), sysfs.read(f"{d}/in_power{n}_input")
                    if label and mw and mw.isdigit():
                        rails[label] = int(mw) / 1e3
    return rails


#: rails that measure the whole board's input
BOARD_RAILS = ("VDD_IN", "POM_5V_IN")


class JetsonBackend(Backend):
    """nvpmodel + jetson_clocks + GPU devfreq on an NVIDIA Jetson."""

    name = "jetson"
    SETTINGS = {
        s.name: s
        for s in (
            Setting("nvpmodel", "a mode NAME from `nvpmodel -p --verbose` (e.g. MAXN, 15W)",
                    "power mode by name; ids differ per board", mode_name, type=str),
            Setting("jetson_clocks", "true or false",
                    "pin clocks at the mode's maximum (jetson_clocks); false restores the stored ones",
                    boolean, type=bool),
            Setting("gpu_min_freq_pct", "integer 0..100", "GPU devfreq min_freq, % of the available range",
                    int_range(0, 100), type=int),
            Setting("gpu_max_freq_pct", "integer 0..100", "GPU devfreq max_freq, % of the available range",
                    int_range(0, 100), type=int),
        )
    }

    def __init__(self, ctx: HostContext, model: str) -> None:
        self.ctx = ctx
        self.sysfs = ctx.sysfs
        self.runner = ctx.runner
        self.model = model
        self.store_file = str(Path(ctx.state_dir) / "l4t_dfs.conf")
        self.gpu = find_gpu_devfreq(self.sysfs)
        self._clocks = "off"
        self._modes: dict[str, int] | None = None
        self.mode_changes = 0
        self._energy_j = 0.0
        self._last_t: float | None = None
        self._knobs = self._make_knobs()

    @classmethod
    def probe(cls, ctx: HostContext) -> JetsonBackend | str:
        model_file = ctx.sysfs.root.parent / "proc/device-tree/model"
        try:
            model = model_file.read_text(errors="replace").rstrip("\x00\n")
        except OSError:
            model = ""
        if "Jetson" not in model and ctx.runner.which("nvpmodel") is None:
            said = f"says {model!r}" if model else "is missing"
            return f"not a Jetson: {model_file} {said} and nvpmodel is not on PATH"
        return cls(ctx, model or "Jetson")

    # --- nvpmodel ---------------------------------------------------------------------------

    def modes(self) -> dict[str, int]:
        """Mode name -> id (``nvpmodel -p --verbose``), read once."""
        if self._modes is None:
            self._modes = parse_nvpmodel_modes(self.runner.run(["nvpmodel", "-p", "--verbose"]))
        return self._modes

    def _read_mode(self) -> str | None:
        try:
            q = parse_nvpmodel_query(self.runner.run(["nvpmodel", "-q"]))
        except (CommandError, UnavailableError):
            return None
        return q[0] if q else None

    def _write_mode(self, mode: str) -> None:
        modes = self.modes()
        if mode not in modes:
            raise UnavailableError(f"nvpmodel: no mode {mode!r}; have {sorted(modes)}")
        # a switch that needs a reboot asks on stdin: answer no, verify then reports it
        out = self.runner.run(["nvpmodel", "-m", str(modes[mode])], input_text="NO\n")
        if "NVPM ERROR" in out:
            raise CommandError(["nvpmodel", "-m", str(modes[mode])], 0, out)
        if "Reboot required" in out:
            raise UnavailableError(f"nvpmodel: mode {mode} needs a reboot; declined, the mode is unchanged "
                                   "until the host reboots")
        self.mode_changes += 1

    # --- jetson_clocks ----------------------------------------------------------------------

    def _read_clocks(self) -> str | None:
        return self._clocks if self.runner.which("jetson_clocks") else None

    def _write_clocks(self, value: str) -> None:
        if value == "on":
            if not os.path.exists(self.store_file):
                Path(self.store_file).parent.mkdir(parents=True, exist_ok=True)
                self.runner.run(["jetson_clocks", "--store", self.store_file])
            self.runner.run(["jetson_clocks"])
        elif os.path.exists(self.store_file):
            self.runner.run(["jetson_clocks", "--restore", self.store_file])
        self._clocks = value

    def adopt_originals(self, names: list[str]) -> None:
        """jetson_clocks changed by an earlier run (per the state file): state unknown, not off."""
        if "jetson.jetson_clocks" in names:
            self._clocks = UNKNOWN

    def _make_knobs(self) -> dict[str, Knob]:
        knobs = {
            "jetson.nvpmodel": Knob("jetson.nvpmodel", self.name, "nvpmodel power mode name",
                                    self._read_mode, self._write_mode),
            "jetson.jetson_clocks": Knob("jetson.jetson_clocks", self.name, "jetson_clocks on/off",
                                         self._read_clocks, self._write_clocks),
        }
        if self.gpu:
            for leaf in ("min_freq", "max_freq"):
                rel = f"class/devfreq/{self.gpu}/{leaf}"
                knobs[f"jetson.gpu.{leaf}"] = sysfs_knob(self.sysfs, rel, f"jetson.gpu.{leaf}", self.name,
                                                         f"GPU devfreq {leaf}, Hz")
        return knobs

    def knobs(self) -> dict[str, Knob]:
        return self._knobs

    # --- planning ---------------------------------------------------------------------------

    def plan(self, settings: dict[str, Any]) -> tuple[list[Change], list[Skipped]]:
        changes: list[Change] = []
        skipped: list[Skipped] = []
        k = self._knobs
        want_mode = settings.get("nvpmodel")
        want_clocks = settings.get("jetson_clocks")
        live_clocks = self._read_clocks()
        if want_mode is not None:
            try:
                modes = self.modes()
            except (CommandError, UnavailableError) as exc:
                modes = {}
                skipped.append(Skipped("jetson.nvpmodel", str(exc)))
            if modes and want_mode not in modes:
                skipped.append(Skipped("jetson.nvpmodel", f"no mode {want_mode!r}; have {sorted(modes)}"))
            elif modes and self._read_mode() != want_mode:
                # safe order: clocks off -> mode -> clocks on again
                clocks_after = want_clocks if want_clocks is not None else live_clocks == "on"
                if live_clocks in ("on", UNKNOWN):
                    changes.append(Change(k["jetson.jetson_clocks"], "off", "before mode switch"))
                changes.append(Change(k["jetson.nvpmodel"], want_mode))
                if clocks_after:
                    changes.append(Change(k["jetson.jetson_clocks"], "on", "after mode switch"))
                want_clocks = None
        if want_clocks is not None:
            if live_clocks is None:
                skipped.append(Skipped("jetson.jetson_clocks", "jetson_clocks not installed"))
            else:
                changes.append(Change(k["jetson.jetson_clocks"], "on" if want_clocks else "off"))
        changes.extend(self._gpu_changes(settings, skipped))
        return changes, skipped

    def _gpu_changes(self, settings: dict[str, Any], skipped: list[Skipped]) -> list[Change]:
        lo_pct, hi_pct = settings.get("gpu_min_freq_pct"), settings.get("gpu_max_freq_pct")
        if lo_pct is None and hi_pct is None:
            return []
        if not self.gpu:
            skipped.append(Skipped("jetson.gpu", "no GPU devfreq device (of_node name) found"))
            return []
        avail = sorted(int(x) for x in (self.sysfs.read(f"class/devfreq/{self.gpu}/available_frequencies")
                                        or "").split() if x.isdigit())
        if not avail:
            skipped.append(Skipped("jetson.gpu", "available_frequencies unreadable"))
            return []
        out = []
        pairs = [(lo_pct, "min_freq"), (hi_pct, "max_freq")]
        cur_max = self.sysfs.read(f"class/devfreq/{self.gpu}/max_freq")
        new_min = None if lo_pct is None else avail[(len(avail) - 1) * lo_pct // 100]
        if new_min is not None and cur_max and cur_max.isdigit() and new_min > int(cur_max):
            pairs.reverse()  # raise max before min
        for pct, leaf in pairs:
            if pct is not None:
                out.append(Change(self._knobs[f"jetson.gpu.{leaf}"], str(avail[(len(avail) - 1) * pct // 100])))
        return out

    # --- readings ---------------------------------------------------------------------------

    def readings(self) -> dict[str, float]:
        out: dict[str, float] = {}
        rails = read_rails(self.sysfs)
        for label, w in rails.items():
            out[f"rail_{label}_w"] = w
        board = next((rails[r] for r in BOARD_RAILS if r in rails), None)
        now = time.monotonic()
        if board is not None:
            out["board_power_w"] = board
            if self._last_t is not None:
                self._energy_j += board * (now - self._last_t)
            out["board_energy_j"] = self._energy_j
        self._last_t = now
        if self.gpu:
            load = self.sysfs.read(f"class/devfreq/{self.gpu}/device/load")
            if load and load.isdigit():
                out["gpu_util_pct"] = int(load) / 10.0
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "gpu_devfreq": self.gpu}
