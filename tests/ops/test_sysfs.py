"""Sysfs writes: O_NOFOLLOW, regular files only, and on the real /sys only files that live on sysfs."""

from __future__ import annotations

import os

import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.cpufreq import CpufreqBackend
from tierfleet_ops.errors import NotAllowedError, UnavailableError
from tierfleet_ops.settings import validate_section
from tierfleet_ops.state import StateStore
from tierfleet_ops.sysfs import FS_MAGIC, SYSFS_MAGIC, Sysfs, fs_magic

from . import machines

GOV = "devices/system/cpu/cpufreq/policy0/scaling_governor"


@pytest.fixture
def tree(tmp_path):
    root = machines.acpi_cpufreq(tmp_path / "sys", 2)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    return root, victim


def test_a_symlink_at_an_allowlisted_path_is_refused_not_followed(tree):
    root, victim = tree
    (root / GOV).unlink()
    (root / GOV).symlink_to(victim)
    with pytest.raises(NotAllowedError, match=r"policy0/scaling_governor: it is a symbolic link"):
        Sysfs(root).write(GOV, "performance")
    assert victim.read_text() == "precious\n"


def test_a_symlinked_knob_fails_in_the_applier_and_the_target_is_untouched(tree):
    root, victim = tree
    be = CpufreqBackend(Sysfs(root))
    (root / GOV).unlink()
    (root / GOV).symlink_to(victim)
    want = validate_section({"governor": "performance"}, CpufreqBackend.SETTINGS, "t.yaml", "cpufreq")
    out = {o.name: o for o in Applier(StateStore(None)).apply(be.plan(want)[0])}
    assert out["cpufreq.policy1.scaling_governor"].status == "changed"
    bad = out.get("cpufreq.policy0.scaling_governor")
    # the read follows the link (reads are harmless), the write is refused
    assert bad is not None and bad.status == "failed" and "symbolic link" in bad.note
    assert victim.read_text() == "precious\n"


def test_a_fifo_or_directory_is_refused_without_hanging(tree):
    root, _ = tree
    (root / GOV).unlink()
    os.mkfifo(root / GOV)
    with pytest.raises((NotAllowedError, UnavailableError)):  # ENXIO with no reader, else not regular
        Sysfs(root).write(GOV, "performance")
    reader = os.open(root / GOV, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(NotAllowedError, match="not a regular file"):
            Sysfs(root).write(GOV, "performance")
    finally:
        os.close(reader)
    (root / GOV).unlink()
    (root / GOV).mkdir()
    with pytest.raises((NotAllowedError, UnavailableError)):
        Sysfs(root).write(GOV, "performance")


def test_outside_sysfs_is_refused_when_sysfs_is_required(tree):
    root, _ = tree
    with pytest.raises(NotAllowedError, match=r"not on sysfs \(filesystem type 0x[0-9a-f]+\)"):
        Sysfs(root, require_sysfs=True).write(GOV, "performance")
    assert (root / GOV).read_text().strip() == "schedutil"
    # a recorded tree is written whole: a shorter value leaves nothing of the longer one
    Sysfs(root).write(GOV, "performance")
    Sysfs(root).write(GOV, "ondemand")
    assert (root / GOV).read_text() == "ondemand"


def test_the_real_sys_is_checked_and_is_sysfs():
    assert Sysfs("/sys").require_sysfs and not Sysfs("/tmp").require_sysfs
    if not os.path.exists("/sys/devices/system/cpu/online"):
        pytest.skip("no /sys here")
    fd = os.open("/sys/devices/system/cpu/online", os.O_RDONLY)
    try:
        assert fs_magic(fd) == SYSFS_MAGIC
    finally:
        os.close(fd)


def test_a_host_may_accept_a_dressed_filesystem_explicitly(tree):
    root, _ = tree
    fd = os.open(root / GOV, os.O_RDONLY)
    try:
        magic = fs_magic(fd)
    finally:
        os.close(fd)
    name = next((n for n, m in FS_MAGIC.items() if m == magic), None)
    if name is None:
        pytest.skip(f"the test tree's filesystem {magic:#x} has no name here")
    Sysfs(root, require_sysfs=True, also_on=(name,)).write(GOV, "performance")
    assert (root / GOV).read_text() == "performance"
    # a dressed file is a plain file: a shorter value replaces a longer one whole
    Sysfs(root, require_sysfs=True, also_on=(name,)).write(GOV, "ondemand")
    assert (root / GOV).read_text() == "ondemand"
    with pytest.raises(ValueError, match="unknown filesystem 'nfs'; allowed: btrfs, ext4, overlay"):
        Sysfs(root, also_on=("nfs",))
