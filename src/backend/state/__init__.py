"""The state layer: the SQLite store, the registry, runs, workers, and the services that
change them (admin actions, adding taxa). Imports nothing above it."""
