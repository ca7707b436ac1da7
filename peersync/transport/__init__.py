"""How a replica is reached: the agent's wire protocol, the local replica in-process, SSH sessions, keepers' warm connections, rsync and rclone."""
