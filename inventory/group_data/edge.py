"""Jetsons: L4T apt repository (or the fleet's mirror of repo.download.nvidia.com/jetson)."""

l4t_repo = "https://repo.download.nvidia.com/jetson"

# Jetsons idle most of the day: start in the eco profile, the ops daemon raises it under load.
power_profile = "eco"

# SSH: a deploy user with key-based login and passwordless sudo.
ssh_user = "deploy"
_sudo = True
