"""pyinfra operations of tierfleet: generators that compare facts with the wanted state and yield commands.

- :mod:`.release` install a verified artifact as a release, switch ``current``, prune, roll back
- :mod:`.account` the service account (one account read, no home directory made)
"""
