"""Sizes both ends of a sync agree on.  Its own module so that the wire protocol (imported on the
CLI's fast path) can use them without loading the core's types."""

# A large file crosses between replicas in ranges of this size (read_range / stage_chunk): the
# memory one file in transit costs, whatever its size.
RANGE = 4 << 20
