"""pyinfra facts for tierfleet: each is a shell ``command()`` plus a pure ``process(lines)``.

Commands always exit 0 and print what they could read; parsers turn missing or garbled output into an
explicit "unknown" (``None`` fields, or an ``error`` entry), never a traceback. The parsers are tested on
recorded real output in ``tests/facts/``.

Modules: :mod:`.jetson` (model, SoC, L4T, JetPack), :mod:`.nvidia` (GPUs via nvidia-smi, lspci, driver),
:mod:`.cpu` (topology, ISA flags, cpufreq), :mod:`.system` (memory, disk, OS release),
:mod:`.power` (which power controls exist).
"""
