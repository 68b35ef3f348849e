"""Claims are one transaction: overlapping ticks never share a run or exceed the cap."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from backend.jobs.reconcile import close_record
from backend.state.accessions import AccessionList

from ..conftest import SRC, cli_env
from ..loopback import Fault
from .conftest import TAXON

TICK = "import sys; from backend.cli.main import main; sys.exit(main(['tick']))"


def test_two_overlapping_ticks_never_share_a_run_and_never_exceed_the_cap(lab, file_server,
                                                                          tmp_path):
    contents = lab.serve_runs(file_server, 40)
    for acc, files in contents.items():  # workers stay busy: nothing is collected mid-test
        for name in files:
            file_server.faults[f"/vol1/fastq/{acc}/{name}"] = Fault("stall", times=10_000)
    env = cli_env(tmp_path, PYTHONPATH=str(SRC), MICROFETCH_MAX_WORKERS="3",
                  MICROFETCH_CHUNK_MAX_RUNS="2", MICROFETCH_FASTQ_SCHEME="http",
                  MICROFETCH_HEARTBEAT_SECONDS="1", MICROFETCH_CALLBACK_URL="http://127.0.0.1:9")
    try:
        for _ in range(3):
            ticks = [subprocess.Popen([sys.executable, "-c", TICK], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
            for tick in ticks:
                _, err = tick.communicate(timeout=120)
                assert tick.returncode == 0, err
            live = lab.store.live()
            assert len(live) == 3
            every = [run for record in live for run in record.runs]
            assert [run for run, n in Counter(every).items() if n > 1] == []
            runs = AccessionList.of(lab.settings, TAXON).load()
            for record in live:
                assert {runs[r].worker for r in record.runs} == {record.name}
            for record in live:  # free the slots so that the next round races again
                lab.backend.destroy(record)
                close_record(lab.settings, lab.store, lab.registry, record, "test round over")
    finally:
        for record in lab.store.live():
            lab.backend.destroy(record)


def test_the_pending_and_claim_queries_use_their_indexes(lab):
    lab.add_runs(*(f"ERR{n:07d}" for n in range(50)))
    db = lab.accessions.db
    plans = {
        "pending": "SELECT * FROM runs WHERE taxon = 562 AND category = 'pending' "
                   "ORDER BY seq LIMIT 10",
        "claim": "UPDATE runs SET status = 'assigned' WHERE taxon = 562 AND "
                 "accession IN ('ERR0000001', 'ERR0000002') AND +category = 'pending'",
        "in order": "SELECT * FROM runs WHERE taxon = 562 AND seq > 0 ORDER BY seq LIMIT 10",
        "runs by accession": "SELECT * FROM runs WHERE taxon = 562 AND accession IN "
                             "('ERR0000001', 'ERR0000002')",
        "errors": "SELECT last_error FROM runs WHERE taxon = 562 AND last_error != '' "
                  "ORDER BY seq DESC LIMIT 1",
        "live workers": "SELECT record FROM workers WHERE phase != 'destroyed'",
        "history of a taxon": "SELECT * FROM history WHERE taxon = 562 ORDER BY id DESC "
                              "LIMIT 10",
    }
    for name, sql in plans.items():
        plan = " ".join(row[3] for row in db.query(f"EXPLAIN QUERY PLAN {sql}"))
        assert "USING" in plan and "INDEX" in plan, f"{name}: {plan}"
        assert "SCAN runs" not in plan and "SCAN history" not in plan, f"{name}: {plan}"
    for name in ("claim", "runs by accession"):  # by accession, never every run of the taxon
        plan = " ".join(row[3] for row in db.query(f"EXPLAIN QUERY PLAN {plans[name]}"))
        assert "(taxon=? AND accession=?)" in plan, f"{name}: {plan}"
