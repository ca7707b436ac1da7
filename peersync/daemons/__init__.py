"""What runs in the background: the heartbeat tick, the watch daemon, connection keepers."""
