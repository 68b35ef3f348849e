"""The ENA stand-in on 127.0.0.1, with the real Lactobacillus answer and synthetic taxa."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.demo.ena_standin import EnaData, EnaStandIn, load_tsv, make_run
from tests.conftest import cli_env

ANCHORS = Path(__file__).resolve().parents[1] / "data" / "ena"
LACTOBACILLUS = ANCHORS / "bactopia__supplementary-data-1-lactobacillus-query-results.txt"


@pytest.fixture
def ena() -> Iterator[EnaStandIn]:
    data = EnaData()
    data.names.update({1578: "Lactobacillus", 562: "Escherichia coli", 561: "Escherichia"})
    data.children[561].add(562)
    load_tsv(data, 1578, LACTOBACILLUS)
    for i in range(1, 4):
        make_run(data, 562, f"ERR{9000000 + i}", updated="2026-01-10")
    stand_in = EnaStandIn(data).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def env(ena, tmp_path) -> dict[str, str]:
    return cli_env(tmp_path, MICROFETCH_ENA_RETRIES="1", MICROFETCH_ENA_TIMEOUT="5",
                   **ena.settings_env())


@pytest.fixture
def make_run_in(ena):
    def add(taxon: int, accession: str, **options: object) -> dict[str, str]:
        return make_run(ena.data, taxon, accession, **options)

    return add
