"""The daemon: the heartbeat and its jobs (check, dispatch, collect, reconcile), the
scheduler, alerts and metrics."""
