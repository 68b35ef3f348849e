"""`python -m backend` runs the `microfetch` command."""

from backend.cli.main import console_main

console_main()
