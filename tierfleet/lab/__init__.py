"""The local lab fleet: systemd-nspawn hosts over real SSH, dressed as Jetsons, CPU servers and GPU nodes.

Library only (no click); ``tierfleet lab ...`` in :mod:`tierfleet.cli.lab` is the thin CLI.
Read ``README.md`` beside this file for what is real and what is dressed.

- :mod:`tierfleet.lab.profiles`   host profiles (plain data)
- :mod:`tierfleet.lab.dress`      a profile -> the /proc and /sys files a host sees (pure)
- :mod:`tierfleet.lab.jetson`     nvpmodel.conf and nv_tegra_release in the real formats (pure)
- :mod:`tierfleet.lab.base`       prerequisites, cached base system, lab key, signed apt repository
- :mod:`tierfleet.lab.host`       one host: overlay, disk, netns, bridges, supervisor
- :mod:`tierfleet.lab.supervisor` keeps one systemd-nspawn running across reboots (stdlib only)
- :mod:`tierfleet.lab.mirror`     apt + artifact HTTP server with Range and fault modes
- :mod:`tierfleet.lab.fleet`      the :class:`~tierfleet.lab.fleet.Lab`: up, down, status, exec, faults
- :mod:`tierfleet.lab.state`      state dir, state file, names the hosts see
- :mod:`tierfleet.lab.bench`      up/down time and memory per host
"""
