"""Edge fleet: NVIDIA Jetsons.

    tierfleet preflight -i inventory/edge.py
    pyinfra inventory/edge.py deploys/preflight.py

Every host joins the group ``edge`` (named after this file) and takes its defaults from
``group_data/all.py`` and ``group_data/edge.py``. Per-host data below overrides them.
"""

jetsons = [
    # Orin Nano 8GB dev kit, JetPack 6.2 (L4T 36.4.3): 6 cores, 8 GB unified memory -> fits basic.
    ("orin-nano-01.edge.example.net", {"tier": "basic", "power_profile": "eco"}),
    ("orin-nano-02.edge.example.net", {"tier": "basic"}),
    # Orin NX 16GB: 8 cores, 16 GB unified -> fits advanced.
    ("orin-nx-01.edge.example.net", {"tier": "advanced"}),
    # Original Jetson Nano 4GB, JetPack 4.6.6 (L4T 32.7.6): 4 cores, 4 GB -> basic at most.
    # A smaller model than the tier's default keeps headroom on 4 GB of shared memory.
    (
        "nano-01.edge.example.net",
        {
            "tier": "basic",
            "model": {
                "name": "DeepSeek-R1-Distill-Qwen-1.5B",
                "quant": "Q4_K_M",
                "file": "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf",
                "size_gb": 1.12,
            },
        },
    ),
]
