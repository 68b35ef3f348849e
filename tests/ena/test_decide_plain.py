"""Plain one- or two-file runs are decided by one match: always as the rules one by one."""

from __future__ import annotations

import itertools
import re

import pytest

from backend.ena import parse_fetched_data as pf
from backend.ena.client import FIELDS
from backend.settings import load_settings

SETTINGS = load_settings({"MICROFETCH_FASTQ_HOSTS": "ftp.sra.ebi.ac.uk,127.0.0.1:8000"})
HOST = "ftp.sra.ebi.ac.uk/vol1/fastq/ERR123/ERR123456/"
PATHS = [f"{HOST}ERR123456_1.fastq.gz", f"{HOST}ERR123456_2.fastq.gz",
         f"{HOST}ERR123456_1.fastq.gz;{HOST}ERR123456_2.fastq.gz",
         f"{HOST}ERR123456_1.fastq.gz;{HOST}ERR123456_1.fastq.gz",
         f"{HOST}a;{HOST}b;{HOST}c_1.fq;{HOST}c_2.fq", "127.0.0.1:8000/x/y.fq",
         "FTP.sra.ebi.ac.uk/x/y.fq", "evil.org/x.fq", f"{HOST}../x.fq", f"{HOST}..x/y.fq",
         f"{HOST}/x.fq", f"{HOST}x/", f"{HOST}x.fq;", f" {HOST}x.fq", f"{HOST}x y.fq", "",
         f"{HOST}x.fq;;{HOST}y.fq", f"{HOST}é.fq"]
MD5S = ["a" * 32, "A" * 32 + ";" + "b" * 32, "a" * 32 + ";", "g" * 32, "a" * 31, "",
        "a" * 32 + ";" + "b" * 32 + ";" + "c" * 32 + ";" + "d" * 32]
SIZES = ["1", "10;20", "007;1", "1;", "²", "", " 1", "1;2;3;4"]


def row(ftp: str, md5: str, sizes: str) -> list[str]:
    values = dict.fromkeys(FIELDS, "") | {
        "run_accession": "ERR123456", "instrument_platform": "ILLUMINA",
        "library_strategy": "WGS", "library_source": "GENOMIC", "library_layout": "PAIRED",
        "fastq_ftp": ftp, "fastq_md5": md5, "fastq_bytes": sizes}
    return [values[name] for name in FIELDS]


@pytest.mark.parametrize("ftp", PATHS)
def test_the_one_match_decides_as_the_rules_do(ftp, monkeypatch):
    rows = [row(ftp, md5, sizes) for md5, sizes in itertools.product(MD5S, SIZES)]
    quick = [pf.decide_values(values, SETTINGS) for values in rows]
    monkeypatch.setattr(pf, "_plain_files", lambda hosts: re.compile(r"(?!)"))
    assert quick == [pf.decide_values(values, SETTINGS) for values in rows]


def test_plain_runs_take_the_one_match():
    pattern = pf._plain_files(SETTINGS.fastq_hosts)
    assert pattern.match(f"{PATHS[2]}\t{MD5S[1]}\t10;20")
    assert not pattern.match(f"{PATHS[6]}\t{MD5S[0]}\t1")  # host in capitals: the long way
