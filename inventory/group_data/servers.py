"""CPU servers: no driver; the ops daemon reserves 2 physical cores for the OS and pins llama-server to the rest."""

power_profile = "balanced"

# SSH: a deploy user with key-based login and passwordless sudo.
ssh_user = "deploy"
_sudo = True
