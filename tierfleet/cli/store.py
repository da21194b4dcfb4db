"""``tierfleet store``: sign and verify the manifests of an artifact store (a directory)."""

from __future__ import annotations

from pathlib import Path

import click

from tierfleet.artifacts.signing import load_public_key, sign_store, store_manifests, verify_file
from tierfleet.exceptions import ConfigError

store_dir = click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))


@click.group()
def store() -> None:
    """Publish artifacts into an artifact store directory; sign and verify its manifests."""


@store.command()
@store_dir
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True,
              help="Artifact name: <model name>-<quant> for a model (the inventory's model name and quant).")
@click.option("--version", "version", required=True, help="Version, e.g. 2 (the inventory's model_version).")
@click.option("--kind", type=click.Choice(["model", "runtime"]), default="model", show_default=True)
@click.option("--compress", is_flag=True, help="Also store a .zst form of each file (hosts fetch it when smaller).")
def publish(store: Path, files: tuple[Path, ...], name: str, version: str, kind: str, compress: bool) -> None:
    """Copy FILES into STORE/<name>/<version>/ with their manifest (sizes, sha256); the first file is the entry point.

    Versions are immutable: the same files again change nothing, other files under a published version are
    refused. Sign the new manifest with `tierfleet store sign` before hosts will take it.
    """
    from tierfleet import rules
    from tierfleet.artifacts.manifest import publish as publish_files
    from tierfleet.exceptions import RuleError

    for key, value in (("--name", name), ("--version", version)):
        try:
            rules.artifact_name(value)
        except RuleError as exc:
            raise ConfigError(key, value, str(exc)) from None
    manifest = publish_files(store, list(files), kind=kind, name=name, version=version, compress=compress)
    click.echo(f"published {store / name / version / 'manifest.json'} ({len(manifest.files)} file(s)); "
               "sign it: tierfleet store sign")


@store.command()
@store_dir
@click.option("--key", "key_id", default=None, help="gpg key id to sign with (default: gpg's default key).")
@click.option("--gnupghome", type=click.Path(file_okay=False, path_type=Path), envvar="GNUPGHOME", default=None,
              help="GnuPG home holding the signing key (env GNUPGHOME).")
@click.option("--pubkey", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The armoured public key hosts pin: manifests that already verify with it are left alone.")
@click.option("--force", is_flag=True, help="Sign every manifest again.")
def sign(store: Path, key_id: str | None, gnupghome: Path | None, pubkey: str | None, force: bool) -> None:
    """Write manifest.json.sig next to every <name>/<version>/manifest.json in STORE."""
    armored = load_public_key(pubkey, pubkey, "--pubkey") if pubkey else None
    signed = sign_store(store, armored, gnupghome=gnupghome, key_id=key_id, force=force)
    for manifest in signed:
        click.echo(f"signed {manifest.relative_to(store)}")
    click.echo(f"{len(signed)} of {len(store_manifests(store))} manifest(s) signed")


@store.command()
@store_dir
@click.option("--pubkey", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The armoured public key the inventory pins (artifact_key).")
def verify(store: Path, pubkey: str) -> int:
    """Check every manifest's signature in STORE as a host does (gpgv); exit 1 if any fails."""
    armored = load_public_key(pubkey, pubkey, "--pubkey")
    bad = 0
    for manifest in store_manifests(store):
        try:
            fpr = verify_file(manifest, armored)
        except ConfigError as exc:
            bad += 1
            click.echo(f"FAIL {manifest.relative_to(store)}: {exc.problem}")
        else:
            click.echo(f"ok   {manifest.relative_to(store)} (signed by {fpr})")
    return 1 if bad else 0
