"""microfetch: keep a lab's local copy of public sequencing data up to date."""

__version__ = "0.1.0"
