"""x86_64 CPU servers: llama.cpp on the CPU, the AVX-512 / AVX2 / generic build chosen from the CPU flags.

    tierfleet preflight -i inventory/servers.py
    pyinfra inventory/servers.py deploys/preflight.py --limit cpu-02.dc1.example.net
"""

cpu_servers = [
    # 2x 16-core Xeon, 256 GB: enough for enterprise on the CPU (7B Q6_K), slowly.
    ("cpu-01.dc1.example.net", {"tier": "enterprise"}),
    # 8-core / 16-thread EPYC VM, 32 GB.
    ("cpu-02.dc1.example.net", {"tier": "advanced"}),
    # Let preflight pick the highest tier the host fits.
    ("cpu-03.dc1.example.net", {"tier": "auto"}),
]
