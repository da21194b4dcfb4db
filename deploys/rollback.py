"""Roll the model back: move ``current`` off the release of ``model_version`` to the previous release.

    pyinfra inventory/lab.py deploys/rollback.py --data model_version=2

Then set ``model_version`` in the inventory to the good version, or the next tier deploy installs the bad one
again. A host whose ``current`` is not that release changes nothing.
"""

from tierfleet.deploys.tier import rollback

rollback()
