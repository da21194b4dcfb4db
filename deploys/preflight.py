"""Check every host against its tier; change nothing.

    pyinfra inventory/edge.py deploys/preflight.py
    pyinfra inventory/edge.py deploys/preflight.py --data tier=advanced

Hosts that do not fit fail with the reason; the run exits non-zero. For a per-host table, use
``tierfleet preflight -i inventory/edge.py``.
"""

from tierfleet.deploys.preflight import preflight

preflight()
