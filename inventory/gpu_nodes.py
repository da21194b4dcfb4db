"""NVIDIA GPU nodes (x86_64, Ubuntu 22.04): driver from the CUDA repository, llama.cpp with CUDA.

    tierfleet preflight -i inventory/gpu_nodes.py
    pyinfra inventory/gpu_nodes.py deploys/preflight.py --limit a100
"""

t4 = [
    ("t4-01.dc1.example.net", {"tier": "advanced"}),
    ("t4-02.dc1.example.net", {"tier": "advanced"}),
]

a100 = [
    # Serve in containers here (installs nvidia-container-toolkit).
    ("a100-01.dc1.example.net", {"tier": "enterprise", "runtime_mode": "container"}),
    ("a100-02.dc1.example.net", {"tier": "enterprise", "runtime_mode": "container"}),
]
