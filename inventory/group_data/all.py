"""Defaults for every host (pyinfra group data). Each key is validated by tierfleet.settings.HostSettings;
a bad value stops the run with the file, the key and what is allowed.
"""

# SSH settings live in each fleet's group file (edge.py, servers.py, gpu_nodes.py), so that other
# inventories sharing this directory bring their own.

# Model tier: basic | advanced | enterprise | auto (the highest tier the host fits).
tier = "auto"

# Where model releases live on the host (releases/<id>/, current -> releases/<id>).
model_dir = "/var/lib/tierfleet/models"

# How llama-server runs: "native" (systemd service) or "container" (docker + nvidia-container-toolkit).
runtime_mode = "native"

# The fleet's artifact store: runtime tarballs and model files with sha256 manifests.
# An http(s) URL, or an absolute path already present on the hosts (e.g. an NFS mount).
artifact_store = "https://artifacts.example.net/tierfleet"

# Ops daemon power profile to start in: eco | balanced | performance.
power_profile = "balanced"
