"""Fleet rollouts: upgrades and energy-policy changes in batches, with health gates, a failure threshold,
a state file to resume from and a machine-readable report.

- :mod:`.plan`: the order of the hosts and their batches (Ansible's ``serial``: ``1,10%,100%``);
- :mod:`.state`: the rollout's state file (written atomically after every host) and report;
- :mod:`.engine`: runs the batches, one worker process per host under an outer time limit, and stops
  starting hosts once the failure threshold is passed;
- :mod:`.worker`: what runs for one host, on pyinfra's Python API (the tier deploy and the health gate;
  on failure the releases this run switched go back).
"""
