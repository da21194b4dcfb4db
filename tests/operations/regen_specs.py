"""Write tests/operations/specs/ from the spec inputs below and the operations' current output.

Run from the repository root: ``python tests/operations/regen_specs.py``. The inputs (args,
recorded facts, facts after the change) are hand-written here; the expected commands and noop
messages are taken from the code, so review ``git diff tests/operations/specs`` before
committing: the specs are the reference the tests hold the code to.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from pyinfra.api import OperationValueError

from operations.harness import run_operation
from tierfleet.operations import release

F = "tierfleet.facts.release.Releases"
ROOT = "/srv/tierfleet/model"
A, B, C = "a" * 64, "b" * 64, "c" * 64


def man(version="1", files=None, zst=False):
    files = files or [("tiny.gguf", 168320, A)]
    out = []
    for p, s, h in files:
        f = {"path": p, "size": s, "sha256": h}
        if zst:
            f["zst"] = {"path": p + ".zst", "size": s // 2, "sha256": C}
        out.append(f)
    return {
        "schema": 1,
        "kind": "model",
        "name": "tiny",
        "version": version,
        "variant": None,
        "entrypoint": out[0]["path"],
        "files": out,
    }


def mj(m):
    return json.dumps(m, sort_keys=True, separators=(",", ":"))


def rel(rid, mtime, m=None):
    return f"release\t{rid}\t{mtime}\t{mj(m) if m else ''}"


def with_files(lines):
    """Recorded output as the fact prints it: each release with a manifest is followed by its files."""
    out = []
    for line in lines:
        out.append(line)
        fields = line.split("\t")
        if fields[0] == "release" and len(fields) > 3 and fields[3]:
            try:
                m = json.loads(fields[3])
            except ValueError:
                continue
            out += [f"file\t{fields[1]}\tregular file\treleases/{fields[1]}/{f['path']}\t{f['size']}" for f in m["files"]]
    return out


def facts(lines, root=ROOT):
    return {F: {f"root={root}": with_files(lines)}}


specs = {}
M1 = man()
URL = "http://127.0.0.1:8000/tiny/1/"
specs["release.artifact"] = {
    "fresh_http": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts=facts([]),
        facts_after=facts([rel("tiny-1", 1764300000, M1)]),
    ),
    "fresh_zst": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=man(zst=True), source=URL, compressed=True),
        facts=facts([]),
        facts_after=facts([rel("tiny-1", 1764300000, man(zst=True))]),
    ),
    "local_path": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source="/mnt/store/tiny/1"),
        facts=facts([]),
        facts_after=facts([rel("tiny-1", 1764300000, M1)]),
    ),
    "split_shards": dict(
        args=dict(
            root=ROOT,
            release="tiny-2",
            manifest=man("2", [("tiny-00001-of-00002.gguf", 73024, A), ("tiny-00002-of-00002.gguf", 95296, B)]),
            source=URL,
        ),
        facts=facts(["current\treleases/tiny-1", rel("tiny-1", 1764300000, M1)]),
        facts_after=facts(
            [
                "current\treleases/tiny-1",
                rel("tiny-1", 1764300000, M1),
                rel(
                    "tiny-2",
                    1764300100,
                    man("2", [("tiny-00001-of-00002.gguf", 73024, A), ("tiny-00002-of-00002.gguf", 95296, B)]),
                ),
            ]
        ),
    ),
    "runtime_unpack": dict(
        args=dict(
            root="/opt/tierfleet/runtime",
            release="0.3.36-cpu-v3",
            manifest={
                **man("0.3.36+linux-x86_64-cpu-v3", [("llama-server-0.3.36.tar", 21176320, A)], zst=True),
                "kind": "runtime",
                "name": "llama-server",
                "variant": "linux-x86_64-cpu-v3",
            },
            source=URL,
            compressed=True,
            unpack=True,
        ),
        facts=facts([], root="/opt/tierfleet/runtime"),
        facts_after=facts(
            [
                rel(
                    "0.3.36-cpu-v3",
                    1764300000,
                    {
                        **man("0.3.36+linux-x86_64-cpu-v3", [("llama-server-0.3.36.tar", 21176320, A)], zst=True),
                        "kind": "runtime",
                        "name": "llama-server",
                        "variant": "linux-x86_64-cpu-v3",
                    },
                )
            ],
            root="/opt/tierfleet/runtime",
        ),
    ),
    "installed_noop": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts=facts(["current\treleases/tiny-1", rel("tiny-1", 1764300000, M1)]),
        facts_after=None,
    ),
    "resume_staging": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts=facts(["staging\ttiny-1\t100"]),
        facts_after=facts([rel("tiny-1", 1764300000, M1)]),
    ),
    "broken_not_current": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts=facts(
            [
                "current\treleases/tiny-0",
                rel("tiny-0", 1764200000, man("0", [("tiny.gguf", 10, B)])),
                rel("tiny-1", 1764300000),
            ]
        ),
        facts_after=facts(
            [
                "current\treleases/tiny-0",
                rel("tiny-0", 1764200000, man("0", [("tiny.gguf", 10, B)])),
                rel("tiny-1", 1764300000, M1),
            ]
        ),
    ),
    "broken_current_refetched": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts=facts(["current\treleases/tiny-1", "release\ttiny-1\t1764300000\t{not json"]),
        facts_after=facts(["current\treleases/tiny-1", rel("tiny-1", 1764300000, M1)]),
    ),
    "truncated_current_refetched": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts={F: {f"root={ROOT}": ["current\treleases/tiny-1", rel("tiny-1", 1764300000, M1),
                                     "file\ttiny-1\tregular file\treleases/tiny-1/tiny.gguf\t4096"]}},
        facts_after=facts(["current\treleases/tiny-1", rel("tiny-1", 1764300000, M1)]),
    ),
    "damaged_other_content_fails": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts={F: {f"root={ROOT}": [rel("tiny-1", 1764300000, man("1", [("tiny.gguf", 168320, B)]))]}},
        fails=True,
    ),
    "other_content_fails": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL),
        facts=facts([rel("tiny-1", 1764300000, man("1", [("tiny.gguf", 168320, B)]))]),
        fails=True,
    ),
    "quotes_injection": dict(
        args=dict(
            root="/srv/it's $(reboot)", release="tiny-1", manifest=M1, source="http://127.0.0.1:8000/a b/$(id)`id`'/"
        ),
        facts=facts([], root="/srv/it's $(reboot)"),
        facts_after=facts([rel("tiny-1", 1, M1)], root="/srv/it's $(reboot)"),
    ),
    "bad_release_id": dict(
        args=dict(root=ROOT, release="../etc", manifest=M1, source=URL), facts=facts([]), exception=True
    ),
    "bad_source": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source="ftp://127.0.0.1/x"), facts=facts([]), exception=True
    ),
    "relative_root": dict(
        args=dict(root="srv/model", release="tiny-1", manifest=M1, source=URL), facts=facts([]), exception=True
    ),
    "no_zst_form": dict(
        args=dict(root=ROOT, release="tiny-1", manifest=M1, source=URL, compressed=True),
        facts=facts([]),
        exception=True,
    ),
}


def R(*ids):  # noqa: N802 - reads as a table of releases in the specs below
    """Installed releases, one per id, 100 s apart."""
    return [rel(i, 1764300000 + n * 100, man(str(n))) for n, i in enumerate(ids)]


specs["release.switch"] = {
    "first_switch": dict(
        args=dict(root=ROOT, release="tiny-1"),
        facts=facts(R("tiny-1")),
        facts_after=facts(["current\treleases/tiny-1"] + R("tiny-1")),
    ),
    "records_previous": dict(
        args=dict(root=ROOT, release="tiny-2"),
        facts=facts(["current\treleases/tiny-1"] + R("tiny-1", "tiny-2")),
        facts_after=facts(["current\treleases/tiny-2", "previous\treleases/tiny-1"] + R("tiny-1", "tiny-2")),
    ),
    "already_current": dict(
        args=dict(root=ROOT, release="tiny-2"),
        facts=facts(["current\treleases/tiny-2", "previous\treleases/tiny-1"] + R("tiny-1", "tiny-2")),
        facts_after=None,
    ),
    "not_installed_guarded": dict(
        args=dict(root=ROOT, release="tiny-9"),
        facts=facts(["current\treleases/tiny-1"] + R("tiny-1")),
        facts_after=facts(["current\treleases/tiny-9", "previous\treleases/tiny-1"] + R("tiny-1", "tiny-9")),
    ),
    "quotes_injection": dict(
        args=dict(root="/srv/a b;$(id)", release="tiny-1"),
        facts=facts(R("tiny-1"), root="/srv/a b;$(id)"),
        facts_after=facts(["current\treleases/tiny-1"] + R("tiny-1"), root="/srv/a b;$(id)"),
    ),
}
specs["release.rollback"] = {
    "to_previous": dict(
        args=dict(root=ROOT, release="tiny-3"),
        facts=facts(["current\treleases/tiny-3", "previous\treleases/tiny-1"] + R("tiny-1", "tiny-2", "tiny-3")),
        facts_after=facts(["current\treleases/tiny-1", "previous\treleases/tiny-3"] + R("tiny-1", "tiny-2", "tiny-3")),
    ),
    "newest_older_without_previous": dict(
        args=dict(root=ROOT, release="tiny-3"),
        facts=facts(["current\treleases/tiny-3"] + R("tiny-1", "tiny-2", "tiny-3")),
        facts_after=facts(["current\treleases/tiny-2", "previous\treleases/tiny-3"] + R("tiny-1", "tiny-2", "tiny-3")),
    ),
    "explicit_target": dict(
        args=dict(root=ROOT, release="tiny-3", to="tiny-1"),
        facts=facts(["current\treleases/tiny-3", "previous\treleases/tiny-2"] + R("tiny-1", "tiny-2", "tiny-3")),
        facts_after=facts(["current\treleases/tiny-1", "previous\treleases/tiny-3"] + R("tiny-1", "tiny-2", "tiny-3")),
    ),
    "not_current_noop": dict(
        args=dict(root=ROOT, release="tiny-3"),
        facts=facts(["current\treleases/tiny-2", "previous\treleases/tiny-3"] + R("tiny-2", "tiny-3")),
        facts_after=None,
    ),
    "nothing_older_fails": dict(
        args=dict(root=ROOT, release="tiny-1"), facts=facts(["current\treleases/tiny-1"] + R("tiny-1")), fails=True
    ),
    "target_missing_fails": dict(
        args=dict(root=ROOT, release="tiny-3", to="tiny-0"),
        facts=facts(["current\treleases/tiny-3"] + R("tiny-1", "tiny-3")),
        fails=True,
    ),
}
specs["release.prune"] = {
    "keeps_newest_and_current": dict(
        args=dict(root=ROOT, keep=2),
        facts=facts(
            ["current\treleases/tiny-1", "previous\treleases/tiny-4"]
            + R("tiny-1", "tiny-2", "tiny-3", "tiny-4", "tiny-5")
        ),
        facts_after=facts(["current\treleases/tiny-1", "previous\treleases/tiny-4"] + R("tiny-1", "tiny-4", "tiny-5")),
    ),
    "nothing_to_prune": dict(
        args=dict(root=ROOT, keep=3),
        facts=facts(["current\treleases/tiny-2"] + R("tiny-1", "tiny-2")),
        facts_after=None,
    ),
    "staging_too": dict(
        args=dict(root=ROOT, keep=1, staging=True),
        facts=facts(["current\treleases/tiny-2", "staging\ttiny-3\t1200"] + R("tiny-1", "tiny-2")),
        facts_after=facts(["current\treleases/tiny-2"] + R("tiny-2")),
    ),
    "bad_keep": dict(args=dict(root=ROOT, keep=0), facts=facts([]), exception=True),
    "resolves_odd_current_link": dict(
        args=dict(root=ROOT, keep=1),
        facts=facts(["root\t/srv/tierfleet/model", "current\treleases//tiny-1/.\t/srv/tierfleet/model/releases/tiny-1"]
                    + R("tiny-1", "tiny-2", "tiny-3")),
        facts_after=facts(["root\t/srv/tierfleet/model",
                           "current\treleases//tiny-1/.\t/srv/tierfleet/model/releases/tiny-1"] + R("tiny-1", "tiny-3")),
    ),
    "refuses_unknown_current_link": dict(
        args=dict(root=ROOT, keep=1),
        facts=facts(["root\t/srv/tierfleet/model", "current\t/tmp/elsewhere\t/tmp/elsewhere"]
                    + R("tiny-1", "tiny-2", "tiny-3")),
        facts_after=None,
    ),
}
ops = {
    "release.artifact": release.artifact,
    "release.switch": release.switch,
    "release.rollback": release.rollback,
    "release.prune": release.prune,
}
if __name__ == "__main__":  # never on import (pytest imports every module for its doctests)
    base = pathlib.Path(__file__).resolve().parent / "specs"
    for opname, cases in specs.items():
        d = base / opname
        d.mkdir(parents=True, exist_ok=True)
        for case, spec in cases.items():
            out = {"args": spec["args"], "facts": spec["facts"]}
            if spec.get("exception"):
                try:
                    run_operation(ops[opname], spec["args"], spec["facts"])
                except OperationValueError as e:
                    out["exception"] = {"name": type(e).__name__, "message": str(e)}
                else:
                    raise SystemExit(f"{opname}/{case}: no exception")
            else:
                cmds, noops = run_operation(ops[opname], spec["args"], spec["facts"])
                out["commands"] = cmds
                out["noop"] = noops[0] if noops else None
                if spec.get("fails"):
                    out["fails"] = True
                elif spec.get("facts_after") is not None:
                    out["facts_after"] = spec["facts_after"]
                    c2, n2 = run_operation(ops[opname], spec["args"], spec["facts_after"])
                    assert not c2, (opname, case, c2)
                    out["noop_after"] = n2[0]
            (d / f"{case}.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
            print(f"== {opname}/{case}")
            for c in out.get("commands", []):
                print("  $", c)
            print("  noop:", out.get("noop"), "| after:", out.get("noop_after"), "| exc:", out.get("exception"))
