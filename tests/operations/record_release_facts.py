"""Record tests/operations/facts/release.Releases/ from real layouts built on this machine.

Run from the repository root: ``python tests/operations/record_release_facts.py``. Each case builds a
release root in a temporary directory, runs the fact's real command there and stores the output with
the temporary path written as ``/srv/tierfleet/model`` (the spec's root), plus the parsed fact. Review
``git diff tests/operations/facts`` before committing.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tierfleet.facts.release import Releases  # noqa: E402

ROOT = "/srv/tierfleet/model"
OUT = pathlib.Path(__file__).resolve().parent / "facts" / "release.Releases"
T0 = 1764300000


def manifest(version, files):
    return {"schema": 1, "kind": "model", "name": "tiny", "version": version, "variant": None,
            "entrypoint": files[0][0],
            "files": [{"path": p, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for p, data in files]}


def release(root, rid, n, files=(("tiny.gguf", b"abc"),), manifest_text=None, write_files=True):
    d = root / "releases" / rid
    d.mkdir(parents=True)
    if write_files:
        for p, data in files:
            (d / p).write_bytes(data)
    if manifest_text is None:
        manifest_text = json.dumps(manifest(str(n), list(files)), sort_keys=True, separators=(",", ":"))
    if manifest_text != "":
        (d / "manifest.json").write_text(manifest_text + "\n")
    os.utime(d, (T0 + 100 * (n - 1),) * 2)
    return d


def empty_root(root):
    root.mkdir()


def current_previous_staging(root):
    for n in (1, 2, 3):
        release(root, f"tiny-{n}", n)
    os.symlink("releases/tiny-3", root / "current")
    os.symlink("releases/tiny-2", root / "previous")
    (root / ".staging" / "tiny-4").mkdir(parents=True)
    (root / ".staging" / "tiny-4" / "tiny.gguf").write_bytes(b"x" * 12288)


def broken_manifests(root):
    release(root, "tiny-1", 1, manifest_text="")
    release(root, "tiny-2", 2, manifest_text='{"schema": 1, "kind": "model"')
    release(root, "tiny-3", 3, manifest_text='{"schema": 1, "kind": "disk", "name": "x", "version": "1", "files": []}')
    release(root, "tiny-4", 4, manifest_text="[" * 5000 + "]" * 5000)
    os.symlink("/opt/elsewhere", root / "current")


def damaged_files(root):
    d = release(root, "tiny-1", 1)
    (d / "tiny.gguf").write_bytes(b"ab")  # truncated after install
    release(root, "tiny-2", 2, write_files=False)  # file gone
    d = release(root, "tiny-3", 3)
    (d / "tiny.gguf").unlink()
    os.symlink("/etc/hostname", d / "tiny.gguf")  # replaced by a link
    release(root, "tiny-4", 4, files=(("tiny-00001-of-00002.gguf", b"ab"), ("tiny-00002-of-00002.gguf", b"cd")))
    (root / "releases" / "tiny-4" / "bin").mkdir()
    os.symlink("releases//tiny-4/.", root / "current")
    os.symlink(str(root / "releases" / "tiny-1"), root / "previous")


def same_size_other_bytes(root):
    d = release(root, "tiny-1", 1)
    (d / "tiny.gguf").write_bytes(b"xyz")
    os.utime(d, (T0,) * 2)
    release(root, "tiny-2", 2)
    os.symlink("releases/tiny-2", root / "current")


CASES = {
    "missing_root": (None, {}),
    "empty_root": (empty_root, {}),
    "current_previous_staging": (current_previous_staging, {}),
    "broken_manifests": (broken_manifests, {}),
    "damaged_files": (damaged_files, {}),
    "same_size_other_bytes": (same_size_other_bytes, {}),
    "same_size_other_bytes_hashed": (same_size_other_bytes, {"hashes": True}),
}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (build, kwargs) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            real = pathlib.Path(tmp).resolve() / "model"
            if build:
                build(real)
            cmd = Releases().command(root=str(real), **kwargs)
            out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
            lines = [line.replace(str(real), ROOT) for line in out.splitlines()]
        spec = {"arg": {"root": ROOT, **kwargs}, "command": Releases().command(root=ROOT, **kwargs),
                "output": lines, "fact": Releases().process(lines)}
        (OUT / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
        print(f"== {name}: current={spec['fact']['current']} "
              + ", ".join(f"{r}: {e['error'] or 'ok'}" for r, e in spec["fact"]["releases"].items()))
