"""Reading and writing sysfs under a movable root, through an allowlist of writable paths.

Like psutil's ``PROCFS_PATH`` the root is injectable so tests feed recorded trees. Reads never
raise for a missing or unreadable file: they return ``None`` ("unavailable"). Writes are refused
unless the path matches :data:`WRITABLE`; a policy names settings, never paths. A write opens
the file with ``O_NOFOLLOW`` (a symlink planted at an allowlisted path is refused, not
followed), never creates or truncates before the checks, refuses anything but a regular file
and, when the root is the real ``/sys``, checks with ``fstatfs(2)`` that the open file lives on
sysfs (:data:`SYSFS_MAGIC`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from pathlib import Path

from .errors import NotAllowedError, UnavailableError

log = logging.getLogger(__name__)

#: the only sysfs paths (relative to the sysfs root) this daemon may ever write
WRITABLE: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"devices/system/cpu/cpufreq/policy\d+/(scaling_governor|scaling_min_freq|scaling_max_freq"
        r"|energy_performance_preference|boost)",
        r"devices/system/cpu/cpufreq/boost",
        r"devices/system/cpu/intel_pstate/no_turbo",
        r"class/devfreq/[A-Za-z0-9_.:-]+/(min_freq|max_freq)",
    )
)


#: ``f_type`` of sysfs in ``statfs(2)`` (linux/magic.h)
SYSFS_MAGIC = 0x62656572
#: other filesystems a host may explicitly accept as well (``--sysfs-also-on``), by name
FS_MAGIC = {"overlay": 0x794C7630, "tmpfs": 0x01021994, "ext4": 0xEF53, "xfs": 0x58465342, "btrfs": 0x9123683E}

_fstatfs = None


def fs_magic(fd: int) -> int:
    """The filesystem type (``f_type``) of an open file, from libc's ``fstatfs(2)``.

    ``os.fstatvfs`` is POSIX ``fstatvfs``, which has no ``f_type``. ``f_type`` is the first field
    of ``struct statfs`` on every Linux ABI, a C ``long`` (``__fsword_t``).

    >>> fd = os.open("/proc/self/stat", os.O_RDONLY)
    >>> hex(fs_magic(fd)) == hex(0x9FA0)  # PROC_SUPER_MAGIC
    True
    >>> os.close(fd)
    """
    global _fstatfs
    import ctypes  # only writes on a real host need it

    if _fstatfs is None:
        fn = ctypes.CDLL(None, use_errno=True).fstatfs
        fn.argtypes = (ctypes.c_int, ctypes.c_void_p)
        fn.restype = ctypes.c_int
        _fstatfs = fn
    buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on 64-bit Linux
    if _fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ctypes.c_long.from_buffer(buf).value


def is_writable(rel: str) -> bool:
    """True when ``rel`` (relative to the sysfs root, no ``..``) is on the allowlist."""
    if rel.startswith("/") or ".." in rel.split("/"):
        return False
    return any(p.fullmatch(rel) for p in WRITABLE)


class Sysfs:
    """sysfs access rooted at ``root`` (``/sys`` on a real host).

    >>> import tempfile, pathlib
    >>> d = tempfile.mkdtemp(); p = pathlib.Path(d, "devices/system/cpu/cpufreq/boost")
    >>> p.parent.mkdir(parents=True); _ = p.write_text("1\\n")
    >>> Sysfs(d).read("devices/system/cpu/cpufreq/boost")
    '1'
    >>> Sysfs(d).read("devices/system/cpu/cpufreq/missing") is None
    True
    """

    def __init__(self, root: str | os.PathLike[str] = "/sys", require_sysfs: bool | None = None,
                 also_on: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self._root = str(root)
        #: refuse writes to files not on sysfs (default: when the root is the real /sys)
        self.require_sysfs = os.path.realpath(self.root) == "/sys" if require_sysfs is None else require_sysfs
        unknown = sorted(set(also_on) - set(FS_MAGIC))
        if unknown:
            raise ValueError(f"unknown filesystem {unknown[0]!r}; allowed: {', '.join(sorted(FS_MAGIC))}")
        #: filesystem types accepted besides sysfs: a host whose /sys files are dressed on purpose
        #: (the lab's bind-mounted trees are on overlay)
        self.accepted = {SYSFS_MAGIC} | {FS_MAGIC[n] for n in also_on}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def listdir(self, rel: str) -> list[str]:
        """Names in a directory, sorted; empty when it is missing or unreadable."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []

    def read(self, rel: str) -> str | None:
        """The stripped content of a file, or ``None`` when missing, unreadable or not supported."""
        try:
            with open(os.path.join(self._root, rel), encoding="ascii", errors="replace") as f:
                return f.read().strip()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENODEV,
                                 errno.EOPNOTSUPP, errno.EINVAL, errno.EIO, errno.ENOTDIR,
                                 errno.EBUSY, errno.ENODATA):
                log.warning("reading %s: %s", self.path(rel), exc)
            return None

    def write(self, rel: str, value: str) -> None:
        """Write ``value`` to an allowlisted file (command-line equivalent: ``echo value > /sys/rel``).

        Raises :class:`NotAllowedError` off the allowlist and :class:`UnavailableError` when the
        kernel refuses (missing file, EACCES, EINVAL, EBUSY).
        """
        if not is_writable(rel):
            raise NotAllowedError(f"refusing to write {rel!r}: not on the sysfs allowlist")
        try:
            self._write_file(self.path(rel), value)
        except NotAllowedError:
            raise
        except OSError as exc:
            raise UnavailableError(f"{self.path(rel)}: write {value!r} refused: "
                                   f"{os.strerror(exc.errno or 0)}") from exc

    def _write_file(self, path: Path, value: str) -> None:
        # no O_CREAT (sysfs files exist or the knob is not there), no O_TRUNC before the checks,
        # O_NONBLOCK so a FIFO planted in a test tree cannot hang the open
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotAllowedError(f"refusing to write {path}: it is a symbolic link") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotAllowedError(f"refusing to write {path}: not a regular file")
            magic = fs_magic(fd) if self.require_sysfs else None
            if magic is not None and magic not in self.accepted:
                raise NotAllowedError(f"refusing to write {path}: not on sysfs (filesystem type {magic:#x})")
            if magic != SYSFS_MAGIC:
                os.ftruncate(fd, 0)  # a tree of plain files (recorded, or dressed); sysfs takes each write whole
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)


def parse_cpulist(text: str) -> list[int]:
    """Parse a kernel CPU list (``0-3,8,10-11``) into sorted CPU numbers.

    >>> parse_cpulist("0-3,8,10-11")
    [0, 1, 2, 3, 8, 10, 11]
    >>> parse_cpulist("")
    []
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def format_cpulist(cpus: list[int] | set[int]) -> str:
    """Format CPU numbers as a kernel CPU list.

    >>> format_cpulist([0, 1, 2, 5, 7, 8])
    '0-2,5,7-8'
    """
    out: list[str] = []
    seq = sorted(set(cpus))
    i = 0
    while i < len(seq):
        j = i
        while j + 1 < len(seq) and seq[j + 1] == seq[j] + 1:
            j += 1
        out.append(str(seq[i]) if i == j else f"{seq[i]}-{seq[j]}")
        i = j + 1
    return ",".join(out)
