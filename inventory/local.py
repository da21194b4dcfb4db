"""This machine, through pyinfra's @local connector: the smallest fleet there is.

    tierfleet preflight -i inventory/local.py
"""

hosts = [("@local", {"tier": "auto"})]
