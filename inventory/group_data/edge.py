"""Jetsons: L4T apt repository (or the fleet's mirror of repo.download.nvidia.com/jetson)."""

l4t_repo = "https://repo.download.nvidia.com/jetson"

# sha256 of the L4T signing key file (l4t_repo_key, by default <l4t_repo>/jetson-ota-public.asc): installed
# only when it matches, into its own keyring that only the L4T source trusts.
# l4t_repo_key_sha256 = "<64 lowercase hex digits>"

# Jetsons idle most of the day: start in the eco profile, the ops daemon raises it under load.
power_profile = "eco"

# SSH: a deploy user with key-based login and passwordless sudo.
ssh_user = "deploy"
_sudo = True
