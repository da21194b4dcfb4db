"""Stand-ins for hardware this host may not have, replaying recorded real data."""
