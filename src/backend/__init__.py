"""microfetch: keep a lab's local copy of public sequencing data up to date."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: One source for the version: pyproject.toml, read from the installed metadata.
    __version__ = version("microfetch")
except PackageNotFoundError:  # a checkout used without installing it
    __version__ = "0+unknown"
