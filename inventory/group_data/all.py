"""Defaults for every host (pyinfra group data). Each key is validated by tierfleet.settings.HostSettings;
a bad value stops the run with the file, the key and what is allowed.
"""

# SSH settings live in each fleet's group file (edge.py, servers.py, gpu_nodes.py), so that other
# inventories sharing this directory bring their own.

# Model tier: basic | advanced | enterprise | auto (the highest tier the host fits).
tier = "auto"

# Where model releases live on the host (releases/<id>/, current -> releases/<id>): an absolute, normalised
# directory of two or more components, not under /etc, /usr, /proc, /sys, /dev, /boot or /run.
model_dir = "/var/lib/tierfleet/models"

# How llama-server runs: "native" (systemd service) or "container" (docker + nvidia-container-toolkit).
runtime_mode = "native"

# The fleet's artifact store: runtime tarballs and model files with sha256 manifests.
# An http(s) URL, or an absolute path already present on the hosts (e.g. an NFS mount).
artifact_store = "https://artifacts.example.net/tierfleet"

# The key that signs the store's manifests: an ASCII-armoured OpenPGP public key, or the path of its .asc
# file. With it, every host checks each manifest.json.sig with gpgv before it fetches anything, and refuses
# unsigned or badly signed ones; an http:// store is accepted only with it. Sign a store with
# `tierfleet store sign STORE_DIR --key KEYID`.
# artifact_key = "keys/fleet-artifacts.asc"

# Re-hash installed releases against their manifests on every run (reads every byte). Off, a release is
# checked by its files' sizes; either way a damaged release is fetched again.
# verify_releases = False

# Ops daemon power profile to start in: eco | balanced | performance.
power_profile = "balanced"
