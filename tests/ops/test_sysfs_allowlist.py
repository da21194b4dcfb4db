"""The sysfs write allowlist and the read/write paths, through ``Sysfs.write``/``read`` and ``is_writable``.

Every allowed path has its neighbours in a table of paths that must be refused: a policy name that is not
``policy<digits>``, another file in the same directory, junk before or after (what ``fullmatch`` refuses and
``match``/``search`` would not), a devfreq device name crossing ``/``, ``..`` components, absolute paths. Each
refused path exists in the tree (where it can), so a write that got through would show in the file.

Writes go to real files: a tree under a temporary root, and real kernel refusals where mounts are allowed (a
read-only sysfs attribute and a sysfs file that rejects the value, bind-mounted onto an allowlisted path; a
read-only bind mount; a full filesystem), each in a child process with a private mount namespace.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.base import HostContext
from tierfleet_ops.backends.cpufreq import CpufreqBackend
from tierfleet_ops.errors import NotAllowedError, OpsError, UnavailableError
from tierfleet_ops.settings import validate_section
from tierfleet_ops.state import StateStore
from tierfleet_ops.sysfs import SYSFS_MAGIC, Sysfs, fs_magic, is_writable

from . import machines

CPUFREQ = "devices/system/cpu/cpufreq"

#: every kind of path the daemon writes, with the characters a devfreq device name may hold
ALLOWED = [
    f"{CPUFREQ}/policy0/scaling_governor",
    f"{CPUFREQ}/policy4/scaling_min_freq",
    f"{CPUFREQ}/policy12/scaling_max_freq",
    f"{CPUFREQ}/policy0/energy_performance_preference",
    f"{CPUFREQ}/policy127/boost",
    f"{CPUFREQ}/boost",
    "devices/system/cpu/intel_pstate/no_turbo",
    "class/devfreq/17000000.ga10b/min_freq",
    "class/devfreq/57000000.gpu/max_freq",
    "class/devfreq/soc:gpu-0_A/min_freq",
]

#: (path, why it must be refused)
REFUSED = [
    # cpufreq policies: the name is policy<digits>, the leaf one of five files
    (f"{CPUFREQ}/policy/scaling_governor", "policy without a number"),
    (f"{CPUFREQ}/policyX/scaling_governor", "policy[^/] is not policy<digits>"),
    (f"{CPUFREQ}/policy0x/scaling_governor", "digits then junk"),
    (f"{CPUFREQ}/policy-1/scaling_governor", "a sign is not a digit"),
    (f"{CPUFREQ}/policy0/../policy1/scaling_governor", ".. between policies"),
    (f"{CPUFREQ}/policy0/sub/scaling_governor", "one level deeper"),
    (f"{CPUFREQ}/policy0/scaling_available_governors", "read-only neighbour"),
    (f"{CPUFREQ}/policy0/energy_performance_available_preferences", "read-only neighbour"),
    (f"{CPUFREQ}/policy0/scaling_setspeed", "userspace governor knob"),
    (f"{CPUFREQ}/policy0/cpuinfo_max_freq", "read-only neighbour"),
    (f"{CPUFREQ}/policy0/stats/reset", "statistics reset"),
    (f"{CPUFREQ}/policy0/scaling_governorX", "suffix junk (match would pass)"),
    (f"{CPUFREQ}/policy0/boost/x", "suffix junk after boost"),
    (f"x{CPUFREQ}/policy0/scaling_governor", "prefix junk (search would pass)"),
    # global cpufreq boost
    (f"{CPUFREQ}/boostX", "suffix junk (match would pass)"),
    (f"{CPUFREQ}/boost/x", "below the boost file"),
    (f"{CPUFREQ}/ondemand/up_threshold", "another file under cpufreq/"),
    (f"{CPUFREQ}/policy0", "a policy directory"),
    (f"x/{CPUFREQ}/boost", "prefix junk (search would pass)"),
    (f"sys/{CPUFREQ}/boost", "the root named twice"),
    # intel_pstate: only no_turbo
    ("devices/system/cpu/intel_pstate/status", "switches the driver mode (active/passive/off)"),
    ("devices/system/cpu/intel_pstate/max_perf_pct", "another intel_pstate file"),
    ("devices/system/cpu/intel_pstate/hwp_dynamic_boost", "another intel_pstate file"),
    ("devices/system/cpu/intel_pstate/no_turbo2", "suffix junk"),
    ("devices/system/cpu/intel_pstate/no_turbo/x", "below no_turbo"),
    ("x/devices/system/cpu/intel_pstate/no_turbo", "prefix junk"),
    # devfreq: one name component, only min_freq/max_freq
    ("class/devfreq/gpu/governor", "devfreq governor"),
    ("class/devfreq/gpu/userspace/set_freq", "userspace governor knob"),
    ("class/devfreq/gpu/available_frequencies", "read-only neighbour"),
    ("class/devfreq/gpu/min_freqX", "suffix junk (match would pass)"),
    ("class/devfreq/gpu/max_freq/x", "below max_freq"),
    ("class/devfreq/a/b/min_freq", "device name crossing /"),
    ("class/devfreq/gpu/device/min_freq", "device name crossing /"),
    ("class/devfreq//min_freq", "empty device name"),
    ("class/devfreq/gpu 0/min_freq", "space in the device name"),
    ("x/class/devfreq/gpu/min_freq", "prefix junk (search would pass)"),
    # what only the ".." guard stops: the device-name class admits "."
    ("class/devfreq/../min_freq", ".. as the device name (the pattern alone passes it)"),
    ("class/devfreq/../max_freq", ".. as the device name (the pattern alone passes it)"),
    # absolute paths and the empty path
    (f"/{CPUFREQ}/boost", "absolute"),
    (f"/sys/{CPUFREQ}/boost", "absolute, sysfs root included"),
    ("/etc/passwd", "absolute, outside sysfs"),
    ("", "empty"),
    ("kernel/mm/transparent_hugepage/enabled", "outside the daemon's knobs"),
    ("devices/system/cpu/cpu0/online", "CPU hotplug"),
]


def tree_sysfs(root: Path) -> Sysfs:
    """A Sysfs over a tree of regular files built by the test."""
    return Sysfs(root)


def put(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("rel", ALLOWED)
def test_allowed_paths_are_written_exactly(tmp_path, rel):
    assert is_writable(rel)
    # a longer value was there: the file ends up holding exactly the new value, as `echo -n v > file`
    f = put(tmp_path, rel, "balance_performance\n")
    tree_sysfs(tmp_path).write(rel, "1")
    assert f.read_text() == "1"


def test_a_plain_file_holds_exactly_the_value_even_an_empty_one(tmp_path):
    # a tree of plain files is truncated to nothing before the write, so no byte of the old value survives
    rel = f"{CPUFREQ}/policy0/energy_performance_preference"
    f = put(tmp_path, rel, "balance_power\n")
    tree_sysfs(tmp_path).write(rel, "")
    assert f.read_bytes() == b""
    tree_sysfs(tmp_path).write(rel, "power")
    assert f.read_bytes() == b"power"


@pytest.mark.parametrize("rel, why", REFUSED, ids=[f"{i}-{why}" for i, (_, why) in enumerate(REFUSED)])
def test_refused_paths(tmp_path, rel, why):
    assert not is_writable(rel), why
    # make the file exist where the path leads, so that a write that got through would change it
    target = None
    if rel and not rel.startswith("/"):
        target = Path(os.path.normpath(tmp_path / rel))
        assert target.is_relative_to(tmp_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("original\n")
    with pytest.raises(NotAllowedError, match=r"refusing to write .*: not on the sysfs allowlist") as info:
        tree_sysfs(tmp_path).write(rel, "0")
    assert not isinstance(info.value, UnavailableError)
    if target is not None:
        assert target.read_text() == "original\n"


def test_absolute_path_into_the_tree_is_refused_and_untouched(tmp_path):
    # an absolute path that leads into the tree itself: only the absolute-path rule can refuse it
    f = put(tmp_path, f"{CPUFREQ}/boost", "1\n")
    rel = str(f)
    assert not is_writable(rel)
    with pytest.raises(NotAllowedError):
        tree_sysfs(tmp_path).write(rel, "0")
    assert f.read_text() == "1\n"


def test_dot_dot_device_name_would_escape_to_a_sibling_file(tmp_path):
    """``class/devfreq/../min_freq`` is ``class/min_freq``: a file the allowlist never names."""
    sibling = put(tmp_path, "class/min_freq", "original\n")
    with pytest.raises(NotAllowedError):
        tree_sysfs(tmp_path).write("class/devfreq/../min_freq", "0")
    assert sibling.read_text() == "original\n"


# --- writes the kernel (or the tree) refuses ------------------------------------------------------

def test_write_never_creates_a_missing_knob(tmp_path):
    rel = f"{CPUFREQ}/policy0/energy_performance_preference"
    (tmp_path / CPUFREQ / "policy0").mkdir(parents=True)
    with pytest.raises(UnavailableError, match="No such file or directory") as info:
        tree_sysfs(tmp_path).write(rel, "power")
    assert str(tmp_path / rel) in str(info.value)
    assert not isinstance(info.value, NotAllowedError)
    assert os.listdir(tmp_path / CPUFREQ / "policy0") == []


def test_write_under_a_missing_directory_is_unavailable(tmp_path):
    with pytest.raises(UnavailableError, match="No such file or directory"):
        tree_sysfs(tmp_path).write("class/devfreq/gpu/max_freq", "1")
    assert list(tmp_path.iterdir()) == []


def test_write_to_a_directory_is_unavailable(tmp_path):
    (tmp_path / CPUFREQ / "boost").mkdir(parents=True)
    with pytest.raises(UnavailableError, match="Is a directory"):
        tree_sysfs(tmp_path).write(f"{CPUFREQ}/boost", "0")


def test_refusal_on_the_real_sysfs_is_unavailable():
    # this host's /sys has no cpufreq policies: the knob is not there, and the error says so
    sysfs = Sysfs()
    assert sysfs.root == Path("/sys")
    if sysfs.exists(f"{CPUFREQ}/policy0/scaling_governor"):
        pytest.skip("this host has cpufreq policies")
    with pytest.raises(UnavailableError, match="/sys/devices/system/cpu/cpufreq/policy0/scaling_governor"):
        sysfs.write(f"{CPUFREQ}/policy0/scaling_governor", "performance")


#: run in a child inside its own mount namespace: writes through Sysfs, reports errors and descriptor counts
WRITER = """
import json, os, sys
from tierfleet_ops.errors import NotAllowedError, UnavailableError
from tierfleet_ops.sysfs import Sysfs
a = json.loads(sys.argv[1])
fds = len(os.listdir("/proc/self/fd"))
errors = []
for _ in range(a["times"]):
    try:
        Sysfs(a["root"]).write(a["rel"], a["value"])
        errors.append(None)
    except Exception as exc:
        errors.append({"unavailable": isinstance(exc, UnavailableError), "not_allowed": isinstance(exc, NotAllowedError),
                       "message": str(exc), "cause_errno": getattr(exc.__cause__, "errno", None)})
after = len(os.listdir("/proc/self/fd"))
content = open(os.path.join(a["root"], a["rel"])).read() if a["read_back"] else None
print(json.dumps({"errors": errors, "leaked": after - fds, "content": content}))
"""


def write_under_mounts(root: Path, binds: list[tuple[str, Path, bool]], rel: str, value: str, times: int = 1,
                       read_back: bool = True, prepare: str = "") -> dict:
    """Write ``value`` to ``rel`` ``times`` times with ``binds`` (src, dst, read-only) mounted.

    The mounts exist only in a private mount namespace of a child process (``unshare -m``), so nothing is
    left mounted even when the test is killed; ``prepare`` (shell) runs after them. Skipped where mounts are
    not allowed.
    """
    q = shlex.quote
    mounts = [f"mount --bind {q(src)} {q(str(dst))}" + (f" && mount -o remount,ro,bind {q(str(dst))}" if ro else "")
              for src, dst, ro in binds]
    args = json.dumps({"root": str(root), "rel": rel, "value": value, "times": times, "read_back": read_back})
    script = (f"{{ {' && '.join(mounts + ([prepare] if prepare else []))}; }} || exit 97; "
              f"exec {q(sys.executable)} -c {q(WRITER)} {q(args)}")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=120)
    if res.returncode == 97 or (res.returncode and res.stderr.startswith("unshare:")):
        pytest.skip(f"cannot mount in a private namespace here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _sys_file(path: str) -> str:
    if not os.path.exists(path):
        pytest.skip(f"{path} is not on this kernel")
    return path


def test_kernel_refuses_a_read_only_attribute(tmp_path):
    # a read-only sysfs attribute where an allowlisted knob should be: open(2) fails with EACCES, even as root
    src = _sys_file("/sys/devices/system/cpu/kernel_max")
    rel = f"{CPUFREQ}/policy0/scaling_max_freq"
    out = write_under_mounts(tmp_path, [(src, put(tmp_path, rel, ""), False)], rel, "1000")
    [err] = out["errors"]
    assert (err["unavailable"], err["not_allowed"], err["cause_errno"]) == (True, False, errno.EACCES)
    assert err["message"] == f"{tmp_path / rel}: write '1000' refused: Permission denied"
    assert out["content"] == Path(src).read_text()


def test_kernel_refuses_a_value_and_no_descriptor_leaks(tmp_path):
    # a sysfs file that rejects the value in write(2) with EINVAL, as scaling_governor does for an unknown one
    src = _sys_file("/sys/kernel/mm/transparent_hugepage/enabled")
    before = Path(src).read_text()
    rel = f"{CPUFREQ}/policy0/scaling_governor"
    out = write_under_mounts(tmp_path, [(src, put(tmp_path, rel, ""), False)], rel, "no-such-governor", times=20)
    assert {(e["unavailable"], e["not_allowed"], e["cause_errno"]) for e in out["errors"]} == {
        (True, False, errno.EINVAL)}
    assert out["errors"][0]["message"].endswith("write 'no-such-governor' refused: Invalid argument")
    assert out["leaked"] == 0, "a refused write leaked its file descriptor"
    assert out["content"] == before == Path(src).read_text()


def test_read_only_filesystem_is_unavailable(tmp_path):
    rel = "devices/system/cpu/intel_pstate/no_turbo"
    f = put(tmp_path, rel, "0\n")
    out = write_under_mounts(tmp_path, [(str(f), f, True)], rel, "1")
    [err] = out["errors"]
    assert (err["unavailable"], err["cause_errno"]) == (True, errno.EROFS)
    assert err["message"].endswith("refused: Read-only file system")
    assert out["content"] == f.read_text() == "0\n"


def test_a_write_that_fails_after_open_leaks_nothing(tmp_path):
    # a regular file on a full filesystem: open(2) succeeds, write(2) fails with ENOSPC; the descriptor is closed
    rel = "class/devfreq/gpu/max_freq"
    q = shlex.quote
    small = tmp_path / "small"
    small.mkdir()
    prepare = (f"mount -t tmpfs -o size=4k tmpfs {q(str(small))} && mkdir -p {q(str(small / 'class/devfreq/gpu'))}"
               f" && : > {q(str(small / rel))} && {{ cat /dev/zero > {q(str(small / 'fill'))} 2>/dev/null; true; }}")
    out = write_under_mounts(small, [], rel, "1300500000", times=20, prepare=prepare)
    assert {(e["unavailable"], e["cause_errno"]) for e in out["errors"]} == {(True, errno.ENOSPC)}
    assert out["errors"][0]["message"].endswith("refused: No space left on device")
    assert out["leaked"] == 0


def test_a_device_node_at_an_allowlisted_path_is_refused(tmp_path):
    rel = "class/devfreq/gpu/max_freq"
    out = write_under_mounts(tmp_path, [("/dev/full", put(tmp_path, rel, ""), False)], rel, "1300500000",
                             times=5, read_back=False)
    assert {(e["unavailable"], e["not_allowed"]) for e in out["errors"]} == {(False, True)}
    assert out["errors"][0]["message"].endswith("not a regular file")
    assert out["leaked"] == 0


def test_many_writes_leak_no_file_descriptors(tmp_path):
    sysfs = tree_sysfs(tmp_path)
    for rel in ALLOWED:
        put(tmp_path, rel, "0\n")
    fds = open_fds()
    for i in range(50):
        for rel in ALLOWED:
            sysfs.write(rel, str(i))
        with pytest.raises(UnavailableError):
            sysfs.write("class/devfreq/missing/min_freq", "1")
        with pytest.raises(NotAllowedError):
            sysfs.write("devices/system/cpu/intel_pstate/status", "off")
    assert open_fds() == fds
    assert {(tmp_path / rel).read_text() for rel in ALLOWED} == {"49"}


# --- the per-policy boost file -----------------------------------------------------------------------

def test_per_policy_boost_is_written_where_there_is_no_global_switch(tmp_path):
    # kernels that expose boost per policy only (no cpufreq/boost, no intel_pstate/no_turbo)
    machines.acpi_cpufreq(tmp_path, 2)
    (tmp_path / CPUFREQ / "boost").unlink()
    for p in (0, 1):
        put(tmp_path, f"{CPUFREQ}/policy{p}/boost", "1\n")
    sysfs = tree_sysfs(tmp_path)
    be = CpufreqBackend.detect(HostContext(sysfs=sysfs))
    changes, _ = be.plan(validate_section({"boost": False}, CpufreqBackend.SETTINGS, "t.yaml", "profiles.x.cpufreq"))
    assert [(c.knob.name, c.value) for c in changes] == [("cpufreq.policy0.boost", "0"),
                                                         ("cpufreq.policy1.boost", "0")]
    out = Applier(StateStore(None)).apply(changes)
    assert [o.status for o in out] == ["changed", "changed"]
    assert [(tmp_path / CPUFREQ / f"policy{p}/boost").read_text() for p in (0, 1)] == ["0", "0"]


# --- reads --------------------------------------------------------------------------------------------

def test_read_strips_and_replaces_non_ascii(tmp_path):
    put(tmp_path, "a", "  performance \n")
    (tmp_path / "b").write_bytes(b"caf\xc3\xa9\n")
    sysfs = tree_sysfs(tmp_path)
    assert sysfs.read("a") == "performance"
    assert sysfs.read("b") == "caf\ufffd\ufffd"


def test_expected_read_failures_are_quiet(tmp_path, caplog):
    put(tmp_path, "file", "1\n")
    caplog.set_level(logging.DEBUG, logger="tierfleet_ops.sysfs")
    assert tree_sysfs(tmp_path).read("missing") is None                    # ENOENT
    assert tree_sysfs(tmp_path).read("file/child") is None                 # ENOTDIR
    assert Sysfs("/sys").read("bus/cpu/uevent") is None                    # EACCES: a write-only attribute
    assert Sysfs("/proc/self").read("mem") is None                         # EIO
    assert caplog.records == []


def test_unexpected_read_failure_is_none_with_a_warning(tmp_path, caplog):
    (tmp_path / CPUFREQ / "policy0" / "scaling_governor").mkdir(parents=True)
    caplog.set_level(logging.DEBUG, logger="tierfleet_ops.sysfs")
    assert tree_sysfs(tmp_path).read(f"{CPUFREQ}/policy0/scaling_governor") is None   # EISDIR
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"reading {tmp_path / CPUFREQ / 'policy0/scaling_governor'}: "
                    f"[Errno {errno.EISDIR}] Is a directory: '{tmp_path / CPUFREQ / 'policy0/scaling_governor'}'")]


def test_default_root_is_the_real_sysfs():
    with open("/sys/devices/system/cpu/online") as f:
        want = f.read().strip()
    assert Sysfs().read("devices/system/cpu/online") == want
    assert Sysfs().exists("devices/system/cpu/online")
    assert "online" in Sysfs().listdir("devices/system/cpu")


def test_listdir_is_sorted_and_empty_when_unreadable(tmp_path):
    for name in ("policy8", "policy0", "policy4"):
        (tmp_path / CPUFREQ / name).mkdir(parents=True)
    put(tmp_path, "file", "x")
    sysfs = tree_sysfs(tmp_path)
    assert sysfs.listdir(CPUFREQ) == ["policy0", "policy4", "policy8"]
    assert sysfs.listdir("missing") == []
    assert sysfs.listdir("file") == []          # ENOTDIR
    assert not sysfs.exists("missing") and sysfs.exists("file")


def test_refusals_are_ops_errors_with_distinct_classes(tmp_path):
    with pytest.raises(OpsError) as refused:
        tree_sysfs(tmp_path).write("devices/system/cpu/intel_pstate/status", "passive")
    with pytest.raises(OpsError) as missing:
        tree_sysfs(tmp_path).write("devices/system/cpu/intel_pstate/no_turbo", "1")
    assert type(refused.value) is NotAllowedError
    assert type(missing.value) is UnavailableError


def test_fs_magic_of_a_bad_descriptor_is_an_os_error():
    # fstatfs(2) failing is "cannot check", which write() reports as unavailable, not as a refusal
    with pytest.raises(OSError) as info:
        fs_magic(-1)
    assert type(info.value) is OSError
    assert (info.value.errno, info.value.strerror) == (errno.EBADF, os.strerror(errno.EBADF))


def test_fs_magic_tells_filesystems_apart(tmp_path):
    fds = [os.open(p, os.O_RDONLY) for p in ("/sys/devices/system/cpu/online", "/proc/self/stat")]
    try:
        assert [fs_magic(fd) for fd in fds] == [SYSFS_MAGIC, 0x9FA0]  # sysfs, proc
    finally:
        for fd in fds:
            os.close(fd)
