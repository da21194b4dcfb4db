"""GPU nodes: NVIDIA CUDA repository and the pinned driver branch (packages are held at it)."""

nvidia_repo = "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64"

# sha256 of the repository's signing key file (<nvidia_repo>/3bf863cc.pub unless nvidia_repo_key says
# otherwise): the key is installed only when it matches. Check the key's fingerprint once
# (`curl -fsSL URL | gpg --show-keys`), then pin the file: `curl -fsSL URL | sha256sum`.
# nvidia_repo_key_sha256 = "<64 lowercase hex digits>"

# Driver branch: cuda-drivers-<branch>. "-open" selects the open kernel modules (required on Blackwell).
nvidia_driver_branch = "570"

# SSH: a deploy user with key-based login and passwordless sudo.
ssh_user = "deploy"
_sudo = True
