"""The local lab fleet: systemd-nspawn hosts over real SSH, dressed as Jetsons, CPU servers and GPU nodes.

Library only (no click); ``tierfleet lab ...`` in :mod:`tierfleet.cli.lab` is the thin CLI.
Read ``README.md`` beside this file for what is real and what is dressed.

- :mod:`tierfleet.lab.profiles`   host profiles (plain data)
- :mod:`tierfleet.lab.dress`      a profile -> the /proc and /sys files a host sees (pure)
- :mod:`tierfleet.lab.jetson`     nvpmodel.conf and nv_tegra_release in the real formats (pure)
- :mod:`tierfleet.lab.spec`       which hosts: ``--hosts`` / ``-n`` specs and their SSH addresses (pure)
- :mod:`tierfleet.lab.base`       prerequisites, cached base system, lab key, signed apt repository
- :mod:`tierfleet.lab.host`       one host: overlay, disk, netns, bridges, supervisor
- :mod:`tierfleet.lab.supervisor` keeps one systemd-nspawn running across reboots (stdlib only)
- :mod:`tierfleet.lab.mirror`     the apt + artifact mirror: its server process, its fault file, ``publish``
- :mod:`tierfleet.lab.ssh`        the SSH key, ``known_hosts`` and ``ssh_config``
- :mod:`tierfleet.lab.machine`    what the lab changes on the machine itself, and puts back
- :mod:`tierfleet.lab.faults`     fault injection and undoing
- :mod:`tierfleet.lab.status`     what ``lab status`` shows
- :mod:`tierfleet.lab.artifacts`  the tier deploy's artifacts published into the lab's store
- :mod:`tierfleet.lab.inventory`  the state as a pyinfra inventory (``inventory/lab.py``)
- :mod:`tierfleet.lab.fleet`      the :class:`~tierfleet.lab.fleet.Lab` composing them: up, down, status, exec, faults
- :mod:`tierfleet.lab.state`      state dir, state file, names the hosts see
- :mod:`tierfleet.lab.system`     commands, cgroups, mounts, and ``wait_until``, the one poll loop
- :mod:`tierfleet.lab.runner`     pyinfra from Python (one operation on ``@local``, the CLI on an inventory)
- :mod:`tierfleet.lab.bench`      up/down time and memory per host

The mirror's HTTP handler is the artifact store's own (:mod:`tierfleet.artifacts.http_store`).
"""
