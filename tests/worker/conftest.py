"""Fixtures for the worker side: the pipeline's bin/ on sys.path; servers from tests.loopback."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.loopback import Fault, fastq_gz, md5

BIN = Path(__file__).resolve().parents[2] / "nextflow" / "bin"
sys.path.insert(0, str(BIN))

__all__ = ["BIN", "Fault", "fastq_gz", "md5"]
