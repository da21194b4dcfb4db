"""Converge every host to a serving advanced-tier model, or refuse it untouched.

    pyinfra inventory/lab.py deploys/tier_advanced.py
    pyinfra inventory/edge.py deploys/tier_advanced.py --limit orin-nano-01.edge.example.net

Preflight first: a host that does not fit the advanced tier fails with the reason and nothing runs there.
"""

from tierfleet.deploys.tier import tier

tier("advanced")
