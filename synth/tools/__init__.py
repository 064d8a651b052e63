"""Tools that look at shards: verify, inspect, export, pose sheets."""
