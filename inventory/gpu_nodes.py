"""NVIDIA GPU nodes (x86_64, Ubuntu 22.04): driver from the CUDA repository, llama.cpp with CUDA.

    tierfleet preflight -i inventory/gpu_nodes.py
    pyinfra inventory/gpu_nodes.py deploys/preflight.py --limit a100
"""

t4 = [
    ("t4-01.dc1.example.net", {"tier": "advanced"}),
    ("t4-02.dc1.example.net", {"tier": "advanced"}),
    # Two model shards loaded on demand (router mode): upgrade one with
    #   tierfleet upgrade -i inventory/gpu_nodes.py --limit t4-03.dc1.example.net --shard-version chat=2
    (
        "t4-03.dc1.example.net",
        {
            "tier": "advanced",
            "shards": [
                {"name": "chat", "model": {"name": "DeepSeek-R1-Distill-Qwen-1.5B", "quant": "F16",
                                           "file": "DeepSeek-R1-Distill-Qwen-1.5B-F16.gguf", "size_gb": 3.56},
                 "preload": True},
                {"name": "small", "model": {"name": "DeepSeek-R1-Distill-Qwen-1.5B", "quant": "Q4_K_M",
                                            "file": "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf", "size_gb": 1.12},
                 "ttl": "10m"},
            ],
        },
    ),
]

a100 = [
    # Serve in containers here (installs nvidia-container-toolkit).
    ("a100-01.dc1.example.net", {"tier": "enterprise", "runtime_mode": "container"}),
    ("a100-02.dc1.example.net", {"tier": "enterprise", "runtime_mode": "container"}),
]
