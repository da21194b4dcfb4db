"""Artifact manifests: what an artifact is made of, with sizes and sha256 digests.

An artifact store is a directory (served over HTTP in the lab by
:mod:`tierfleet.artifacts.http_store`) laid out as::

    <store>/<name>/<version>/manifest.json
    <store>/<name>/<version>/<file>            the file itself
    <store>/<name>/<version>/<file>.zst        optionally, its Zstandard-compressed form

``manifest.json`` (one JSON object)::

    {"schema": 1, "kind": "model", "name": "tiny-llama", "version": "2026.11.1",
     "variant": null, "entrypoint": "tiny-q8_0.gguf",
     "files": [{"path": "tiny-q8_0.gguf", "size": 168320, "sha256": "<64 hex>",
                "zst": {"path": "tiny-q8_0.gguf.zst", "size": 150211, "sha256": "<64 hex>"}}]}

``entrypoint`` is the file a runtime is pointed at (the first shard of a split model, the
tarball of a runtime). The same document, written into a release directory on a host after
every file was verified, is what lets a rerun skip re-hashing gigabytes.

Parsing is pure (:func:`parse_manifest`); every error is a
:class:`~tierfleet.exceptions.ConfigError` naming the source, the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierfleet.exceptions import ConfigError

SCHEMA = 1
KINDS = ("model", "runtime")
CHUNK = 1 << 20

NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (same as ``sha256sum PATH``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Blob:
    """One stored file: a plain file name (no directories), its size in bytes and sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class ArtifactFile(Blob):
    """A file of an artifact and, optionally, its Zstandard-compressed form in the store."""

    zst: Blob | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.zst is not None:
            out["zst"] = self.zst.to_dict()
        return out


@dataclass(frozen=True)
class Manifest:
    """A validated artifact manifest."""

    kind: str
    name: str
    version: str
    files: tuple[ArtifactFile, ...]
    entrypoint: str
    variant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def size(self) -> int:
        """Total bytes of the (uncompressed) files."""
        return sum(f.size for f in self.files)

    @property
    def compressed(self) -> bool:
        """True when every file also has a ``.zst`` form in the store."""
        return all(f.zst is not None for f in self.files)

    def file(self, path: str) -> ArtifactFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def digests(self) -> dict[str, str]:
        """``{file name: sha256}`` of the uncompressed files (what a release must hold)."""
        return {f.path: f.sha256 for f in self.files}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "variant": self.variant,
            "entrypoint": self.entrypoint,
            "files": [f.to_dict() for f in self.files],
        }
        if self.extra:
            out["extra"] = self.extra
        return out

    def to_json(self) -> str:
        """Compact, key-sorted, one line: stable bytes for the same manifest."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _str(source: str, key: str, value: Any, pattern: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(source, key, f"{value!r} is not allowed; expected {allowed}")
    return value


def _blob(source: str, key: str, raw: Any) -> tuple[str, int, str]:
    if not isinstance(raw, dict):
        raise ConfigError(source, key, "must be an object with path, size and sha256")
    for k in ("path", "size", "sha256"):
        if k not in raw:
            raise ConfigError(source, f"{key}.{k}", "is missing")
    path = _str(source, f"{key}.path", raw["path"], NAME_RE,
                "a plain file name of letters, digits, '.', '_', '+', '-' (no '/')")
    size = raw["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError(source, f"{key}.size", f"{size!r} is not allowed; expected a byte count >= 0")
    sha = _str(source, f"{key}.sha256", raw["sha256"], SHA256_RE, "64 lowercase hex digits")
    return path, size, sha


def manifest_from_dict(raw: Any, source: str = "manifest") -> Manifest:
    """Validate a decoded manifest document; ``source`` names it in errors."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "(top)", "must be a JSON object")
    schema = raw.get("schema")
    if schema != SCHEMA:
        raise ConfigError(source, "schema", f"{schema!r} is not supported; expected {SCHEMA}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(source, "kind", f"{kind!r} is not allowed; expected one of {', '.join(KINDS)}")
    name = _str(source, "name", raw.get("name"), NAME_RE, "letters, digits, '.', '_', '+', '-'")
    version = _str(source, "version", raw.get("version"), NAME_RE, "letters, digits, '.', '_', '+', '-'")
    variant = raw.get("variant")
    if variant is not None:
        variant = _str(source, "variant", variant, NAME_RE, "null or letters, digits, '.', '_', '+', '-'")
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw:
        raise ConfigError(source, "files", "must be a non-empty list of files")
    files: list[ArtifactFile] = []
    seen: set[str] = set()
    for i, item in enumerate(files_raw):
        key = f"files[{i}]"
        path, size, sha = _blob(source, key, item)
        if path in seen or path == MANIFEST_NAME:
            raise ConfigError(source, f"{key}.path", f"{path!r} is used twice or is reserved")
        seen.add(path)
        zst = None
        if item.get("zst") is not None:
            zpath, zsize, zsha = _blob(source, f"{key}.zst", item["zst"])
            if zpath != path + ".zst":
                raise ConfigError(source, f"{key}.zst.path", f"{zpath!r} is not allowed; expected {path + '.zst'!r}")
            zst = Blob(zpath, zsize, zsha)
        files.append(ArtifactFile(path, size, sha, zst))
    entrypoint = raw.get("entrypoint", files[0].path)
    if entrypoint not in seen:
        raise ConfigError(source, "entrypoint", f"{entrypoint!r} is not one of the files: {', '.join(sorted(seen))}")
    unknown = set(raw) - {"schema", "kind", "name", "version", "variant", "entrypoint", "files", "extra"}
    if unknown:
        raise ConfigError(source, ", ".join(sorted(unknown)), "unknown key(s); allowed: schema, kind, name, "
                          "version, variant, entrypoint, files, extra")
    extra = raw.get("extra") or {}
    if not isinstance(extra, dict):
        raise ConfigError(source, "extra", "must be an object")
    return Manifest(kind, name, version, tuple(files), entrypoint, variant, extra)


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Parse and validate manifest JSON text.

    >>> m = parse_manifest('{"schema":1,"kind":"model","name":"m","version":"1",'
    ...                    '"files":[{"path":"m.gguf","size":3,"sha256":"' + 'a' * 64 + '"}]}')
    >>> m.entrypoint, m.size
    ('m.gguf', 3)
    >>> parse_manifest('{"schema":1,"kind":"disk","name":"m","version":"1","files":[]}', "store/m.json")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.ConfigError: store/m.json: kind: 'disk' is not allowed; expected one of model, runtime
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, "(json)", f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except RecursionError:
        raise ConfigError(source, "(json)", "not a manifest: nested too deeply") from None
    return manifest_from_dict(raw, source)


def load_manifest(path: Path) -> Manifest:
    """Read and validate ``path`` (a manifest.json)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot be read: {exc.strerror}") from exc
    return parse_manifest(text, str(path))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def publish(store: Path, files: list[Path], *, kind: str, name: str, version: str,
            variant: str | None = None, compress: bool = False, level: int = 19,
            entrypoint: str | None = None, extra: dict[str, Any] | None = None) -> Manifest:
    """Copy ``files`` into ``<store>/<name>/<version>/`` with a manifest; return the manifest.

    With ``compress`` each file also gets a ``.zst`` form (Zstandard ``level``). Publishing the
    same content again is a no-op; a different content under an existing version is refused
    (versions are immutable).
    """
    from tierfleet.artifacts.compress import compress_file

    dest = Path(store) / name / version
    mpath = dest / MANIFEST_NAME
    if mpath.exists():  # versions are immutable: refuse other content before a published file is touched
        published = {f.path: f.sha256 for f in load_manifest(mpath).files}
        wanted = {Path(src).name: sha256_file(Path(src)) for src in files if Path(src).is_file()}
        if wanted != published:
            raise ConfigError(str(mpath), "version",
                              f"{name} {version} is already published with other content; publish a new version")
    entries: list[ArtifactFile] = []
    dest.mkdir(parents=True, exist_ok=True)
    for src in files:
        src = Path(src)
        if not src.is_file():
            raise ConfigError(str(src), "(file)", "does not exist or is not a regular file")
        target = dest / src.name
        sha = sha256_file(src)
        if not (target.exists() and target.stat().st_size == src.stat().st_size and sha256_file(target) == sha):
            tmp = dest / f".{src.name}.tmp"
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    fout.write(chunk)
            os.replace(tmp, target)
        zst = None
        if compress:
            zpath = dest / (src.name + ".zst")
            if not zpath.exists():
                tmp = dest / f".{zpath.name}.tmp"
                compress_file(target, tmp, level=level)
                os.replace(tmp, zpath)
            zst = Blob(zpath.name, zpath.stat().st_size, sha256_file(zpath))
        entries.append(ArtifactFile(src.name, src.stat().st_size, sha, zst))
    manifest = manifest_from_dict(
        {"schema": SCHEMA, "kind": kind, "name": name, "version": version, "variant": variant,
         "entrypoint": entrypoint or entries[0].path, "files": [e.to_dict() for e in entries],
         **({"extra": extra} if extra else {})},
        source=str(dest / MANIFEST_NAME),
    )
    if mpath.exists():
        old = load_manifest(mpath)
        if old.digests() != manifest.digests():
            raise ConfigError(str(mpath), "version",
                              f"{name} {version} is already published with other content; publish a new version")
    _write_atomic(mpath, (manifest.to_json() + "\n").encode())
    return manifest
