"""The inventory of hosts: hosts and their state, aggregates and membership rules,
maintenance and drain, and the scheduler's in-memory copy of the hosts table."""
