"""Compute backends: where workers run (`local`, `ssh`, `digitalocean`)."""
