"""The sync pipeline for a pair of replicas — scan, reconcile, plan, execute, commit — and running it with several peers."""
