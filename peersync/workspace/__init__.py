"""A workspace and its state dir: config, peers.json, history, instance id, locks, atomic writes, auto-sync settings, init."""
