"""Virtual clusters (seed 003): servers and volumes with groupings, placed all or nothing."""
