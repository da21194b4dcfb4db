"""GPU nodes: NVIDIA CUDA repository and the pinned driver branch (packages are held at it)."""

nvidia_repo = "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64"

# Driver branch: cuda-drivers-<branch>. "-open" selects the open kernel modules (required on Blackwell).
nvidia_driver_branch = "570"

# SSH: a deploy user with key-based login and passwordless sudo.
ssh_user = "deploy"
_sudo = True
