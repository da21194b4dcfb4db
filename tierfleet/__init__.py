"""tierfleet: provision and operate quantized DeepSeek-R1 distilled LLMs on fleets.

The control-side library. Parts, in the order data flows through them:

- :mod:`tierfleet.catalog`   the tier catalog (validated data in ``tierfleet/data/tiers.yaml``)
- :mod:`tierfleet.settings`  per-host settings read from pyinfra inventory data
- :mod:`tierfleet.facts`     pyinfra facts: a command plus a pure parser each
- :mod:`tierfleet.profile`   one normalised host profile built from those facts
- :mod:`tierfleet.preflight` pure verdicts: host profile x tier -> fits / refused, with reasons
- :mod:`tierfleet.fleet`     runs facts over an inventory through pyinfra's Python API
- :mod:`tierfleet.cli`       the thin click layer (the only module that imports click)
"""

__version__ = "0.1.0"
