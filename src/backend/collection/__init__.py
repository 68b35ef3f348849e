"""Bringing finished runs home: verify what a worker made, move it into the data folder,
and record it on the runs."""
