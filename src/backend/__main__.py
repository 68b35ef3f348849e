"""`python -m backend` runs the `microfetch` command."""

from backend.cli import console_main

console_main()
