"""The service account operation: one account read, useradd/usermod only for what differs, no home made."""

from __future__ import annotations

import pytest
from pyinfra.api import OperationValueError

from tierfleet.operations import account

from .harness import run_operation

FACT = "tierfleet.facts.system.Account"
PRESENT = ["passwd\ttierfleet:x:999:997::/nonexistent:/usr/sbin/nologin", "group\ttierfleet:x:997:",
           "primary\ttierfleet", "groups\ttierfleet"]
ABSENT = ["passwd\t", "group\t", "primary\t", "groups\t"]


def facts(lines):
    return {FACT: {"user=tierfleet": lines}}


@pytest.mark.parametrize(
    ("args", "before", "commands", "after"),
    [
        ({"user": "tierfleet"}, ABSENT,
         ["useradd -r -M -d /nonexistent -s /usr/sbin/nologin tierfleet"], PRESENT),
        ({"user": "tierfleet", "groups": ["video"]}, ABSENT,
         ["useradd -r -M -d /nonexistent -s /usr/sbin/nologin -G video tierfleet"],
         PRESENT[:3] + ["groups\ttierfleet video"]),
        ({"user": "tierfleet"}, ["passwd\t", "group\ttierfleet:x:997:", "primary\t", "groups\t"],
         ["useradd -r -M -d /nonexistent -s /usr/sbin/nologin -g tierfleet tierfleet"], PRESENT),
        ({"user": "tierfleet", "groups": ["video"]}, PRESENT, ["usermod -G video tierfleet"],
         PRESENT[:3] + ["groups\ttierfleet video"]),
        ({"user": "tierfleet", "shell": "/bin/false"}, PRESENT, ["usermod -s /bin/false tierfleet"],
         ["passwd\ttierfleet:x:999:997::/nonexistent:/bin/false", *PRESENT[1:]]),
    ],
    ids=["create", "create-with-group", "group-exists", "add-group", "shell"],
)
def test_system_user(args, before, commands, after):
    got, noops = run_operation(account.system_user, args, facts(before))
    assert got == commands
    assert not any(c.startswith(("mkdir", "chown")) for c in got)  # the home is never made
    again, noops = run_operation(account.system_user, args, facts(after))
    assert again == [] and noops == ["system user tierfleet exists"]


def test_groups_none_leaves_supplementary_groups():
    got, _ = run_operation(account.system_user, {"user": "tierfleet"}, facts(PRESENT[:3] + ["groups\ttierfleet video"]))
    assert got == []


@pytest.mark.parametrize("args", [
    {"user": "x; reboot"}, {"user": ""}, {"user": "tierfleet", "groups": ["video;reboot"]},
    {"user": "tierfleet", "home": "relative"}, {"user": "tierfleet", "shell": "/bin/sh\nreboot"},
    {"user": "tierfleet", "home": "/a:b"},
])
def test_hostile_values_are_refused(args):
    with pytest.raises(OperationValueError):
        run_operation(account.system_user, args, facts(ABSENT))
