"""Value rules shared by the inventory, the catalog and the operations, each written once.

The release operations (:mod:`tierfleet.operations.release`) check their arguments with
:func:`release_id`, :func:`release_root` and :func:`release_source`. The inventory
(:class:`tierfleet.settings.HostSettings`) and the catalog (:class:`tierfleet.catalog.ModelArtifact`) use the
stricter rules below, and each of those applies the operations' rule first: a value the inventory accepts is
never refused later by an operation, so a bad inventory stops before anything connects.

Every rule returns the value or raises :class:`~tierfleet.exceptions.RuleError` with a message saying what is
allowed; the caller adds the file and key.

>>> model_dir("/srv/models")
'/srv/models'
>>> model_dir("/var/lib/../../etc")
Traceback (most recent call last):
...
tierfleet.exceptions.RuleError: allowed: absolute directory (normalised: no '.' or '..' component, no '//' or trailing '/'; two or more components of letters, digits and '._+-'; not a system directory such as /etc, /usr or /proc, nor one of tierfleet's own roots), e.g. /var/lib/tierfleet/models
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from tierfleet.artifacts.manifest import NAME_RE
from tierfleet.exceptions import RuleError

# --- the operations' rules ---------------------------------------------------------------------------------

#: what :func:`release_id` allows (the operations' wording)
ID_ALLOWED = "expected letters, digits, '.', '_', '+', '-' (max 128)"
ROOT_ALLOWED = "expected an absolute path other than / without '..'"
SOURCE_ALLOWED = "expected an http(s):// URL or an absolute path"


def release_id(value: object) -> str:
    """A release id: a directory name under ``<root>/releases/`` (:data:`~tierfleet.artifacts.manifest.NAME_RE`).

    >>> release_id("tiny-llama-Q8_0-1")
    'tiny-llama-Q8_0-1'
    >>> release_id("../etc")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.RuleError: expected letters, digits, '.', '_', '+', '-' (max 128)
    """
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise RuleError(ID_ALLOWED)
    return value


def release_root(value: object) -> str:
    """An artifact root: an absolute path on one line, not ``/`` once normalised and without ``..``.

    Returns it normalised (``//``, ``.`` and a trailing ``/`` collapsed). The shell sees it quoted, so other
    characters are allowed here; the inventory's :func:`model_dir` is narrower.

    >>> release_root("/srv/./models/"), release_root("/srv/my models")
    ('/srv/models', '/srv/my models')
    >>> release_root("/.")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.RuleError: expected an absolute path other than / without '..'
    """
    if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "\n\r\x00"):
        raise RuleError(ROOT_ALLOWED)
    path = PurePosixPath(value)
    if not str(path).strip("/"):
        raise RuleError(ROOT_ALLOWED)
    if ".." in path.parts:
        raise RuleError(ROOT_ALLOWED)
    return str(path)


def release_source(value: object) -> str:
    """Where an operation fetches an artifact from: an ``http(s)://`` URL or an absolute path, on one line."""
    if (not isinstance(value, str) or not value.startswith(("http://", "https://", "/"))
            or any(c in value for c in "\n\r\x00")):
        raise RuleError(SOURCE_ALLOWED)
    return value


# --- the inventory's and catalog's rules -------------------------------------------------------------------

#: one path component or URL segment: no '.', '..' or hidden names, nothing a shell or URL treats specially
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}"
_DIR_RE = re.compile(rf"(?:/{_COMPONENT}){{2,32}}")
_LOCAL_STORE_RE = re.compile(rf"(?:/{_COMPONENT}){{1,32}}/?")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_URL_RE = re.compile(rf"https?://{_LABEL}(?:\.{_LABEL})*(?::(?P<port>[0-9]{{1,5}}))?(?:/{_COMPONENT}){{0,32}}/?")
_QUANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}")
MAX_PATH = 1024

#: a model directory may be none of these nor lie under them (the OS's own trees, volatile or kernel ones)
SYSTEM_DIRS = (
    "/bin", "/boot", "/dev", "/efi", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found", "/proc",
    "/run", "/sbin", "/snap", "/sys", "/usr", "/var/cache/apt", "/var/lib/apt", "/var/lib/dpkg",
    "/var/lib/systemd", "/var/lock", "/var/log", "/var/run",
)
#: directories other software shares: a model directory may lie under them, not be one
SHARED_DIRS = (
    "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/mail", "/var/opt", "/var/spool", "/var/tmp",
)
#: the roots the tier deploy keeps for itself (:mod:`tierfleet.deploys.tier`): a model directory may neither
#: be inside one nor hold one
RESERVED_ROOTS = ("/opt/tierfleet/runtime", "/opt/tierfleet/ops", "/opt/tierfleet-ops")

MODEL_DIR_ALLOWED = (
    "absolute directory (normalised: no '.' or '..' component, no '//' or trailing '/'; two or more components "
    "of letters, digits and '._+-'; not a system directory such as /etc, /usr or /proc, nor one of tierfleet's "
    "own roots), e.g. /var/lib/tierfleet/models"
)
URL_ALLOWED = (
    "http(s) URL of a host name or IPv4 address, an optional port and a path of letters, digits and '._+-' "
    "(no '.' or '..' segment, no '//', no query)"
)
STORE_ALLOWED = f"{URL_ALLOWED}, or an absolute directory of the same characters (no '.' or '..' component)"
QUANT_ALLOWED = "GGUF quantisation name: letters, digits and '_' (max 32), e.g. Q8_0, F16, Q4_K_M"
NAME_ALLOWED = "letters, digits, '.', '_', '+', '-', starting with a letter or digit (max 128)"


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def model_dir(value: object) -> str:
    """The inventory's ``model_dir``: a root :func:`release_root` accepts unchanged, two or more plain
    components, not a system directory, a shared one, or one of tierfleet's own roots.

    >>> model_dir("/proc/models")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.RuleError: /proc is a system directory; allowed: absolute directory (normalised: no '.' or '..' component, no '//' or trailing '/'; two or more components of letters, digits and '._+-'; not a system directory such as /etc, /usr or /proc, nor one of tierfleet's own roots), e.g. /var/lib/tierfleet/models
    """
    allowed = f"allowed: {MODEL_DIR_ALLOWED}"
    try:
        normal = release_root(value)
    except RuleError:
        raise RuleError(allowed) from None
    if normal != value or len(normal) > MAX_PATH or not _DIR_RE.fullmatch(normal):
        raise RuleError(allowed)
    for system in SYSTEM_DIRS:
        if _inside(normal, system):
            raise RuleError(f"{system} is a system directory; {allowed}")
    if normal in SHARED_DIRS:
        raise RuleError(f"{normal} is shared by other software, use a directory inside it; {allowed}")
    for own in RESERVED_ROOTS:
        if _inside(normal, own) or _inside(own, normal):
            raise RuleError(f"{own} is tierfleet's own; {allowed}")
    return normal


def http_url(value: object) -> str:
    """An ``http(s)://`` URL the inventory names (a repository, a key, a store).

    >>> http_url("http://mirror.lab:8080/apt/")
    'http://mirror.lab:8080/apt/'
    >>> http_url("https://x/a/../b")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.RuleError: allowed: http(s) URL of a host name or IPv4 address, an optional port and a path of letters, digits and '._+-' (no '.' or '..' segment, no '//', no query)
    """
    match = _URL_RE.fullmatch(value) if isinstance(value, str) and len(value) <= MAX_PATH else None
    if not match or (match["port"] is not None and not 0 < int(match["port"]) <= 65535):
        raise RuleError(f"allowed: {URL_ALLOWED}")
    return value


def store(value: object) -> str:
    """The inventory's ``artifact_store``: an :func:`http_url` or an absolute local directory.

    Either way :func:`release_source` accepts every ``<store>/<name>/<version>/`` made from it with
    :func:`release_id`-shaped names, and none of those leaves the store once ``.``/``..`` segments are
    resolved: the store has none, and such names cannot make one.
    """
    if isinstance(value, str) and value.startswith("/"):
        if len(value) > MAX_PATH or not _LOCAL_STORE_RE.fullmatch(value):
            raise RuleError(f"allowed: {STORE_ALLOWED}")
        return release_source(value)
    try:
        return release_source(http_url(value))
    except RuleError:
        raise RuleError(f"allowed: {STORE_ALLOWED}") from None


def artifact_name(value: object) -> str:
    """A model's name or file name: one :func:`release_id`-shaped name (never a path, never ``.``/``..``)."""
    try:
        return release_id(value)
    except RuleError:
        raise RuleError(f"allowed: {NAME_ALLOWED}") from None


def quant(value: object) -> str:
    """A GGUF quantisation name (``Q8_0``, ``F16``, ``Q4_K_M``, ``IQ2_XXS``)."""
    if not isinstance(value, str) or not _QUANT_RE.fullmatch(value):
        raise RuleError(f"allowed: {QUANT_ALLOWED}")
    return value


def model_release_id(name: str, quant_: str, version: str) -> str:
    """The release id of a model version, ``<name>-<quant>-<version>``, checked by :func:`release_id`.

    >>> model_release_id("DeepSeek-R1-Distill-Qwen-1.5B", "Q8_0", "1")
    'DeepSeek-R1-Distill-Qwen-1.5B-Q8_0-1'
    >>> model_release_id("m" * 120, "Q8_0", "2026.11.1")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.RuleError: the release id <name>-<quant>-<version> is 135 characters; at most 128 are allowed
    """
    rid = f"{name}-{quant_}-{version}"
    if len(rid) > 128:
        raise RuleError(f"the release id <name>-<quant>-<version> is {len(rid)} characters; at most 128 are allowed")
    try:
        return release_id(rid)
    except RuleError:
        raise RuleError(f"the release id {rid!r} is not allowed; {ID_ALLOWED}") from None


def runtime_release_id(version: str, variant: str) -> str:
    """The release id of a llama-server build, ``<version>+<variant>``, checked by :func:`release_id`."""
    rid = f"{version}+{variant}"
    if len(rid) > 128:
        raise RuleError(f"the release id <version>+<variant> is {len(rid)} characters; at most 128 are allowed")
    return release_id(rid)
