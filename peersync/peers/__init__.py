"""Managing peers: adding, removing, and probing their health."""
