"""The pure core: values that cross the pipeline's stages and the rules that decide a sync (no I/O, no clock)."""
