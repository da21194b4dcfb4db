"""Converge every host to a serving enterprise-tier model, or refuse it untouched.

    pyinfra inventory/lab.py deploys/tier_enterprise.py
    pyinfra inventory/edge.py deploys/tier_enterprise.py --limit orin-nano-01.edge.example.net

Preflight first: a host that does not fit the enterprise tier fails with the reason and nothing runs there.
"""

from tierfleet.deploys.tier import tier

tier("enterprise")
