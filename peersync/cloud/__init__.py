"""A cloud folder as a replica, through rclone: its manifest, hashes, transfers, locks and mailbox."""
