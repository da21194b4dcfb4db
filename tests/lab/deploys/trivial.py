"""A trivial deploy the lab tests run twice: a file, a package from the lab mirror, a systemd unit."""

from io import StringIO

from pyinfra import host
from pyinfra.operations import apt, files, systemd

files.put(
    name="Put a marker file",
    src=StringIO(f"tier={host.data.tier}\nprofile={host.data.lab_profile}\n"),
    dest="/etc/tierfleet-lab-marker",
    mode="644",
)

apt.packages(
    name="Install a package from the lab mirror",
    packages=["tierfleet-lab-hello"],
    update=True,
    cache_time=3600,
)

unit = files.put(
    name="Install a small service",
    src=StringIO(
        "[Unit]\nDescription=lab test service\n\n[Service]\n"
        "ExecStart=/usr/bin/python3 -m http.server 8099 --bind 0.0.0.0 --directory /etc\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    dest="/etc/systemd/system/lab-hello.service",
    mode="644",
)

systemd.daemon_reload(name="Reload units when the unit changed", _if=unit.did_change)

systemd.service(
    name="Run the small service",
    service="lab-hello.service",
    running=True,
    enabled=True,
)
