"""Finding peers on the tailnet."""
