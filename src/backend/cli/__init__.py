"""The `microfetch` command line."""
