"""tierfleet-ops: the on-host daemon that sets power profiles and CPU placement for inference.

It runs on Jetsons, x86 servers and GPU nodes in its own virtual environment and depends on
neither pyinfra nor the ``tierfleet`` control package.
"""

__version__ = "0.2.0"
