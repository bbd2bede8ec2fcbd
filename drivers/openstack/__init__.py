"""A virtual availability zone backed by a remote OpenStack cloud (or another broker)."""
