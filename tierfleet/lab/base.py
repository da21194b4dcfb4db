"""The lab's shared pieces: prerequisites, the cached base system, the signing key and apt repo.

Built once per machine under the cache dir (:func:`tierfleet.lab.state.cache_dir`) and reused:

- ``debootstrap-bookworm-<key>.tar.zst``: a minbase Debian 12 with systemd, sshd and python3
  (the only slow step, about a minute; keyed by the package list);
- ``base-<key>/``: that tree prepared for lab hosts (no host keys or machine-id, quiet timers,
  sshd for keys only, small apt caches); the read-only lower layer of every host's overlay;
- ``gnupg/`` + ``tierfleet-lab.gpg``: the lab's apt signing key and the keyring hosts trust;
- ``apt-<key>/``: a signed apt repository of small stand-in packages with the real names and
  versions the deploys install (``Architecture: all``, so they install on the x86 lab hosts).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tierfleet.exceptions import LabError
from tierfleet.lab import jetson
from tierfleet.lab.profiles import JETSON_NANO, JETSON_ORIN_NANO, PROFILES
from tierfleet.lab.state import APT_SUITE
from tierfleet.lab.system import run, which

SUITE = "bookworm"
BASE_INCLUDE = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2",
                "ca-certificates", "procps", "curl", "zstd", "python3-venv")
#: bump when :func:`prepare_base` changes what it writes
PREP_VERSION = 4
#: bump when the apt repositories' layout changes (files besides the packages)
LAYOUT_VERSION = 2
#: the lab key, ASCII-armoured, at the top of the lab apt repository and of the Jetson repositories
KEY_ASC = "tierfleet-lab.asc"
JETSON_KEY_ASC = "jetson-ota-public.asc"

PREREQUISITES = {
    # command -> Debian package
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "socat": "socat",
    "iptables": "iptables",
    "zstd": "zstd",
    "gpg": "gnupg",
    "dpkg-deb": "dpkg",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mkfs.ext4": "e2fsprogs",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "systemctl": "systemd",
}

UNITS_DISABLED = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
                  "e2scrub_reap.service", "fstrim.timer", "getty@tty1.service", "systemd-pstore.service")
UNITS_MASKED = ("systemd-networkd-wait-online.service",)


def ensure_prerequisites(log=print) -> None:
    """Install what the lab needs with apt-get when a command is missing."""
    missing = sorted({pkg for cmd, pkg in PREREQUISITES.items() if not which(cmd)})
    if not missing:
        return
    if not which("apt-get"):
        raise LabError(f"missing lab prerequisites {', '.join(missing)} and no apt-get to install them")
    log(f"installing lab prerequisites: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, timeout=900)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (``$TIERFLEET_LAB_DEBIAN_MIRROR`` wins)."""
    env = os.environ.get("TIERFLEET_LAB_DEBIAN_MIRROR")
    if env:
        return env
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    for text in texts:
        for m in re.finditer(r"URIs:\s*(\S+)[^\n]*\nSuites:\s*([^\n]+)", text):
            if SUITE in m.group(2).split() and "security" not in m.group(1):
                return m.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if m.group(2) == SUITE:
                return m.group(1)
    raise LabError("no Debian bookworm mirror found in /etc/apt/sources.list*; "
                   "set TIERFLEET_LAB_DEBIAN_MIRROR")


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def debootstrap_tarball(cache: Path, log=print) -> Path:
    """The cached debootstrap'd tree as a zstd tarball (built once, ~1 minute)."""
    tarball = cache / f"debootstrap-{SUITE}-{_key(SUITE, 'minbase', BASE_INCLUDE)}.tar.zst"
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache))
    try:
        mirror = debian_mirror()
        log(f"debootstrap {SUITE} from {mirror} (once; about a minute)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_INCLUDE)}", SUITE, work / "root",
             mirror], timeout=1800)
        tmp = tarball.with_suffix(".tmp")
        _tar_create(work / "root", tmp)
        os.replace(tmp, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _tar_create(src: Path, dest: Path) -> None:
    with open(dest, "wb") as out:
        import subprocess

        tar = subprocess.Popen(["tar", "-C", str(src), "--numeric-owner", "--xattrs", "--acls", "-cf", "-", "."],
                               stdout=subprocess.PIPE)
        z = subprocess.run(["zstd", "-q", "-T0", "-3"], stdin=tar.stdout, stdout=out)
        tar.stdout.close()
        if tar.wait() != 0 or z.returncode != 0:
            raise LabError(f"could not write {dest}")


def _tar_extract(tarball: Path, dest: Path) -> None:
    import subprocess

    dest.mkdir(parents=True, exist_ok=True)
    z = subprocess.Popen(["zstd", "-q", "-dc", str(tarball)], stdout=subprocess.PIPE)
    t = subprocess.run(["tar", "-C", str(dest), "--numeric-owner", "--xattrs", "--acls", "-xpf", "-"],
                       stdin=z.stdout)
    z.stdout.close()
    if z.wait() != 0 or t.returncode != 0:
        raise LabError(f"could not extract {tarball}")


def prepare_base(root: Path) -> None:
    """Turn a debootstrap'd tree into the lab hosts' shared lower layer."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    dbus_id.symlink_to("/etc/machine-id")
    (root / "etc/hostname").write_text("base\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    # hosts install only from the lab mirror (added per host); no Debian sources inside the lab
    (root / "etc/apt/sources.list").write_text("# lab hosts use the lab mirror: sources.list.d/tierfleet-lab.list\n")
    (root / "etc/apt/apt.conf.d/90tierfleet-lab").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\nAcquire::Retries "2";\n'
    )
    sshd = root / "etc/ssh/sshd_config.d"
    sshd.mkdir(parents=True, exist_ok=True)
    (sshd / "00-lab.conf").write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UseDNS no\nHostKey /etc/ssh/ssh_host_ed25519_key\nMaxStartups 100:30:200\nMaxSessions 50\n"
    )
    run(["systemctl", f"--root={root}", "disable", *UNITS_DISABLED], check=False)
    run(["systemctl", f"--root={root}", "mask", *UNITS_MASKED], check=False)
    for junk in [*(root / "var/cache/apt/archives").glob("*.deb"), *(root / "var/cache/apt").glob("*.bin")]:
        junk.unlink()
    for d in ("usr/share/tierfleet-lab", "var/lib/tierfleet"):
        (root / d).mkdir(parents=True, exist_ok=True)


def ensure_base(cache: Path, log=print) -> Path:
    """The prepared base directory, built from the cached tarball when missing."""
    raw = debootstrap_tarball(cache, log)
    base = cache / f"base-{_key(raw.name)}-p{PREP_VERSION}"
    if (base / ".tierfleet-lab-base").exists():
        return base
    log(f"preparing base {base.name}")
    tmp = Path(tempfile.mkdtemp(prefix="base-", dir=cache))
    try:
        _tar_extract(raw, tmp)
        prepare_base(tmp)
        (tmp / ".tierfleet-lab-base").write_text(f"{raw.name} prep {PREP_VERSION}\n")
        if base.exists():
            shutil.rmtree(base)
        os.replace(tmp, base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _drop_stale_bases(cache, keep=base)
    return base


def _drop_stale_bases(cache: Path, keep: Path) -> None:
    """Remove older preparations of the same tarball that no overlay uses any more.

    Bases of other tarballs (another checkout with another package list) are left alone.
    """
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for old in cache.glob(keep.name.rsplit("-p", 1)[0] + "-p*"):
        if old != keep and old.is_dir() and f"lowerdir={old}" not in mountinfo:
            shutil.rmtree(old, ignore_errors=True)


# --- the lab signing key --------------------------------------------------------------------------

def ensure_key(cache: Path) -> tuple[Path, Path]:
    """(GNUPGHOME, exported binary keyring) of the lab's apt signing key."""
    home = cache / "gnupg"
    keyring = cache / "tierfleet-lab.gpg"
    if keyring.exists() and (home / "pubring.kbx").exists():
        return home, keyring
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
         "--quick-gen-key", "tierfleet lab mirror <lab@tierfleet.invalid>", "ed25519", "sign", "never"], env=env)
    data = run(["gpg", "--batch", "--export"], env=env).stdout
    if not data:
        raise LabError("gpg exported an empty lab key")
    keyring.write_bytes(data)
    return home, keyring


# --- stand-in packages ----------------------------------------------------------------------------

@dataclass(frozen=True)
class StandinPackage:
    name: str
    version: str
    description: str
    depends: str = ""
    files: tuple[tuple[str, str], ...] = ()  # (path, content)
    #: paths among ``files`` installed 0755 (programs)
    executables: tuple[str, ...] = ()


def _l4t_core(spec) -> StandinPackage:
    return StandinPackage(
        "nvidia-l4t-core", spec.l4t_deb_version, f"NVIDIA Core Package (lab stand-in, L4T {spec.l4t_release}."
        f"{spec.l4t_revision})", files=(("etc/nv_tegra_release", jetson.nv_tegra_release(spec)),))


def _jetpack(version: str, l4t) -> StandinPackage:
    return StandinPackage("nvidia-jetpack", version, "NVIDIA Jetpack Meta Package (lab stand-in)",
                          depends=f"nvidia-l4t-core (>= {l4t.l4t_deb_version.split('-')[0]})")


PERSISTENCED_PROGRAM = """#!/bin/sh
# nvidia-persistenced (tierfleet lab stand-in): stays in the foreground until stopped, like
# `nvidia-persistenced --no-persistence-mode` would keep the driver state initialised.
case "$1" in
    --version|-v) echo "nvidia-persistenced:  version 580.159.04"; exit 0 ;;
esac
mkdir -p /run/nvidia-persistenced
echo $$ > /run/nvidia-persistenced/nvidia-persistenced.pid
exec sleep infinity
"""

PERSISTENCED_UNIT = """[Unit]
Description=NVIDIA Persistence Daemon
Wants=syslog.target

[Service]
Type=simple
ExecStart=/usr/bin/nvidia-persistenced --user root --no-persistence-mode --verbose
ExecStopPost=/bin/rm -rf /run/nvidia-persistenced

[Install]
WantedBy=multi-user.target
"""

#: CUDA runtime libraries the GPU stack installs by default (HostSettings.nvidia_cuda_packages)
CUDA_RUNTIME_PACKAGES = (("cuda-cudart-12-8", "12.8.90-1", "CUDA Runtime native Libraries"),
                         ("libcublas-12-8", "12.8.4.1-1", "CUBLAS native runtime libraries"))


def gpu_driver_branches() -> dict[str, str]:
    """Driver branch -> driver version, for every GPU profile (``580`` -> ``580.159.04``)."""
    out: dict[str, str] = {}
    for p in PROFILES.values():
        for gpu in p.gpus:
            out.setdefault(gpu.driver.split(".")[0], gpu.driver)
    return dict(sorted(out.items()))


def _gpu_packages() -> tuple[StandinPackage, ...]:
    pkgs = []
    for branch, version in gpu_driver_branches().items():
        pkgs += [
            StandinPackage(f"cuda-drivers-{branch}", f"{version}-1",
                           "CUDA Driver meta-package, branch-specific (lab stand-in)",
                           depends=f"nvidia-persistenced (>= {branch})"),
            StandinPackage(f"nvidia-headless-{branch}-server", f"{version}-0ubuntu0.22.04.1",
                           "NVIDIA headless metapackage (lab stand-in)"),
            StandinPackage(f"nvidia-utils-{branch}-server", f"{version}-0ubuntu0.22.04.1",
                           "NVIDIA driver support binaries (lab stand-in)"),
        ]
    for name, version, description in CUDA_RUNTIME_PACKAGES:
        pkgs.append(StandinPackage(name, version, f"{description} (lab stand-in)",
                                   files=((f"usr/local/cuda-12.8/targets/x86_64-linux/lib/{name}.lab",
                                           f"{name} {version}\n"),)))
    return tuple(pkgs)


STANDIN_PACKAGES = (
    _l4t_core(JETSON_ORIN_NANO),
    _l4t_core(JETSON_NANO),
    _jetpack("6.2+b77", JETSON_ORIN_NANO),
    _jetpack("4.6.6-b24", JETSON_NANO),
    *_gpu_packages(),
    StandinPackage("nvidia-persistenced", "580.159.04-1", "NVIDIA Persistence Daemon (lab stand-in)",
                   files=(("usr/bin/nvidia-persistenced", PERSISTENCED_PROGRAM),
                          ("lib/systemd/system/nvidia-persistenced.service", PERSISTENCED_UNIT)),
                   executables=("usr/bin/nvidia-persistenced",)),
    StandinPackage("nvidia-container-toolkit-base", "1.17.8-1", "NVIDIA Container Toolkit Base (lab stand-in)"),
    StandinPackage("nvidia-container-toolkit", "1.17.8-1", "NVIDIA Container toolkit (lab stand-in)",
                   depends="nvidia-container-toolkit-base (= 1.17.8-1)"),
    StandinPackage("tierfleet-lab-hello", "1.0", "A tiny package the lab tests install",
                   files=(("usr/share/tierfleet-lab-hello/hello", "hello from the lab mirror\n"),)),
)


def _jetson_release(spec, jetpack: str) -> dict[str, tuple[StandinPackage, ...]]:
    """One L4T release's packages: JetPack meta packages in ``common``, the board package in the SoC repo."""
    l4t = f"{spec.l4t_deb_version.split('-')[0]}"
    common = (
        _jetpack(jetpack, spec),
        StandinPackage("nvidia-cuda", jetpack, "NVIDIA CUDA Meta Package (lab stand-in)",
                       depends=f"nvidia-l4t-core (>= {l4t})",
                       files=((f"usr/share/doc/nvidia-cuda/jetpack-{spec.jetpack}", f"JetPack {spec.jetpack}\n"),)),
    )
    return {"common": common, "soc": (_l4t_core(spec),)}


def _jetson_repos() -> dict[str, dict[str, tuple[StandinPackage, ...]]]:
    """component (``common``, ``t234``, ``t210``) -> suite (``r36.4``) -> packages."""
    repos: dict[str, dict[str, tuple[StandinPackage, ...]]] = {"common": {}}
    for spec, jetpack in ((JETSON_ORIN_NANO, "6.2+b77"), (JETSON_NANO, "4.6.6-b24")):
        suite = f"r{spec.l4t_release[1:]}.{spec.l4t_revision.split('.')[0]}"
        soc = "t" + spec.soc.removeprefix("tegra")
        parts = _jetson_release(spec, jetpack)
        repos["common"][suite] = parts["common"]
        repos.setdefault(soc, {})[suite] = parts["soc"]
    return repos


#: NVIDIA's Jetson apt layout: common/r36.4, t234/r36.4, common/r32.7, t210/r32.7
JETSON_REPOS = _jetson_repos()


def build_deb(pkg: StandinPackage, outdir: Path) -> Path:
    """Build one ``Architecture: all`` package with dpkg-deb."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pkg"
        (root / "DEBIAN").mkdir(parents=True)
        doc = root / "usr/share/doc" / pkg.name
        doc.mkdir(parents=True)
        (doc / "README.lab").write_text(f"{pkg.name} {pkg.version}: stand-in package of the tierfleet lab.\n")
        for path, content in pkg.files:
            f = root / path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(content)
            f.chmod(0o755 if path in pkg.executables else 0o644)
        control = [f"Package: {pkg.name}", f"Version: {pkg.version}", "Architecture: all",
                   "Maintainer: tierfleet lab <lab@tierfleet.invalid>", "Section: misc", "Priority: optional"]
        if pkg.depends:
            control.append(f"Depends: {pkg.depends}")
        control.append(f"Description: {pkg.description}")
        (root / "DEBIAN/control").write_text("\n".join(control) + "\n")
        conffiles = [f"/{p}" for p, _ in pkg.files if p.startswith("etc/")]
        if conffiles:
            (root / "DEBIAN/conffiles").write_text("\n".join(conffiles) + "\n")
        out = outdir / f"{pkg.name}_{pkg.version.replace(':', '%3a')}_all.deb"
        run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, out])
    return out


def _hashes(data: bytes) -> dict:
    return {"MD5Sum": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest(),
            "SHA256": hashlib.sha256(data).hexdigest()}


def _write_repo(root: Path, suite: str, packages: tuple[StandinPackage, ...], gnupg: Path,
                origin: str, description: str) -> None:
    """One signed suite (``dists/<suite>/main``, ``pool/main``) under ``root``, like a Debian mirror.

    Indexes for amd64 and arm64: the lab's hosts are x86_64 (also the "Jetsons"), packages are
    ``Architecture: all``.
    """
    pool = root / "pool/main"
    pool.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for pkg in packages:
        deb = build_deb(pkg, pool)
        data = deb.read_bytes()
        control = run(["dpkg-deb", "-f", deb]).stdout.decode().rstrip("\n")
        h = _hashes(data)
        stanzas.append(f"{control}\nFilename: pool/main/{deb.name}\nSize: {len(data)}\n"
                       f"MD5sum: {h['MD5Sum']}\nSHA1: {h['SHA1']}\nSHA256: {h['SHA256']}\n")
    index = "\n".join(stanzas).encode()
    dist = root / "dists" / suite
    index_files = {}
    for arch in ("amd64", "arm64"):
        d = dist / "main" / f"binary-{arch}"
        d.mkdir(parents=True)
        (d / "Packages").write_bytes(index)
        gz = gzip.compress(index, mtime=0)
        (d / "Packages.gz").write_bytes(gz)
        index_files[f"main/binary-{arch}/Packages"] = index
        index_files[f"main/binary-{arch}/Packages.gz"] = gz
    release = [f"Origin: {origin}", f"Label: {origin}", f"Suite: {suite}", f"Codename: {suite}",
               "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime()),
               "Architectures: amd64 arm64", "Components: main", f"Description: {description}"]
    for field in ("MD5Sum", "SHA1", "SHA256"):
        release.append(f"{field}:")
        for name, data in sorted(index_files.items()):
            release.append(f" {_hashes(data)[field]} {len(data):>8} {name}")
    (dist / "Release").write_text("\n".join(release) + "\n")
    env = dict(os.environ, GNUPGHOME=str(gnupg))
    run(["gpg", "--batch", "--yes", "--clearsign", "-o", dist / "InRelease", dist / "Release"], env=env)
    run(["gpg", "--batch", "--yes", "-abs", "-o", dist / "Release.gpg", dist / "Release"], env=env)


def armored_key(gnupg: Path) -> str:
    """The lab signing key's public part, ASCII-armoured (what vendors publish as ``*.asc`` / ``*.pub``)."""
    text = run(["gpg", "--batch", "--armor", "--export"], env=dict(os.environ, GNUPGHOME=str(gnupg))).stdout.decode()
    if "BEGIN PGP PUBLIC KEY BLOCK" not in text:
        raise LabError("gpg exported no ASCII-armoured lab key")
    return text


def _spec_key(packages, keyring: Path, *extra) -> str:
    spec = [(p.name, p.version, p.depends, p.files, p.executables) for p in packages]
    return _key(spec, keyring.read_bytes().hex(), LAYOUT_VERSION, *extra)


def _build_into(cache: Path, repo: Path, prefix: str, build) -> Path:
    """Run ``build(tmp)`` in a fresh directory under ``cache`` and move it to ``repo`` only when it finished."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=cache))
    try:
        build(tmp)
        tmp.chmod(0o755)
        if repo.exists():
            shutil.rmtree(repo)
        os.replace(tmp, repo)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return repo


def ensure_apt_repo(cache: Path, log=print) -> Path:
    """A signed apt repository (``dists/lab/main``, ``pool/main``) of the stand-in packages.

    Its top also carries the signing key, ASCII-armoured, as ``tierfleet-lab.asc``
    (``http://mirror.lab/apt/tierfleet-lab.asc`` inside hosts).
    """
    gnupg, keyring = ensure_key(cache)
    repo = cache / f"apt-{_spec_key(STANDIN_PACKAGES, keyring)}"
    if (repo / "dists" / APT_SUITE / "InRelease").exists() and (repo / KEY_ASC).exists():
        return repo
    log("building the lab apt repository")

    def build(tmp: Path) -> None:
        _write_repo(tmp, APT_SUITE, STANDIN_PACKAGES, gnupg, "tierfleet-lab", "tierfleet lab mirror")
        (tmp / KEY_ASC).write_text(armored_key(gnupg))

    return _build_into(cache, repo, "apt-", build)


def ensure_jetson_repo(cache: Path, log=print) -> Path:
    """NVIDIA's Jetson apt layout, signed by the lab key: ``<repo>/{common,t234,t210}/dists/r<major.minor>``.

    Like ``repo.download.nvidia.com/jetson``: ``common`` carries the JetPack meta packages of each
    release, the SoC repositories (``t234`` Orin, ``t210`` Nano) the board packages; the key is
    ``jetson-ota-public.asc`` at the top (``http://mirror.lab/jetson/...`` inside hosts).
    """
    gnupg, keyring = ensure_key(cache)
    all_packages = tuple(p for parts in JETSON_REPOS.values() for pkgs in parts.values() for p in pkgs)
    layout = {soc: {suite: [p.name for p in pkgs] for suite, pkgs in parts.items()}
              for soc, parts in JETSON_REPOS.items()}
    repo = cache / f"jetson-{_spec_key(all_packages, keyring, layout)}"
    if (repo / JETSON_KEY_ASC).exists():
        return repo
    log("building the lab Jetson apt repositories")

    def build(tmp: Path) -> None:
        for component, suites in JETSON_REPOS.items():
            for suite, packages in suites.items():
                _write_repo(tmp / component, suite, packages, gnupg, "NVIDIA (tierfleet lab)",
                            f"Jetson {component} {suite} (tierfleet lab)")
        (tmp / JETSON_KEY_ASC).write_text(armored_key(gnupg))

    return _build_into(cache, repo, "jetson-", build)


def l4t_deb(repo: Path, spec) -> Path:
    """The repo's ``nvidia-l4t-core`` package for a Jetson board."""
    path = repo / "pool/main" / f"nvidia-l4t-core_{spec.l4t_deb_version}_all.deb"
    if not path.exists():
        raise LabError(f"{path} missing from the lab apt repository")
    return path
