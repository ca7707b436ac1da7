"""One replica's disk: scan it, apply decided changes to it, keep its conflicts, trash and deletion records; the operations an agent serves."""
