"""The ena_metadata table: merging verified answers by generation, in-process."""

from __future__ import annotations

from pathlib import Path

from backend.ena.client import FIELDS
from backend.ena.metadata import Tally, merge_answer, metadata_db, metadata_lines
from backend.settings import load_settings


def answer(path: Path, *runs: tuple[str, str]) -> Path:
    """A TSV answer of (accession, last_updated) runs, other fields filled in."""
    rows = ["\t".join(FIELDS)]
    for accession, updated in runs:
        values = {f: "x" for f in FIELDS} | {"run_accession": accession,
                                              "last_updated": updated}
        rows.append("\t".join(values[f] for f in FIELDS))
    path.write_text("\n".join(rows) + "\n" if runs else "")
    return path


def listed(db, taxon: int = 562) -> dict[str, int]:
    return {row[0]: row[1] for row in db.query(
        "SELECT accession, listed FROM ena_metadata WHERE taxon = ?", (taxon,))}


def test_a_full_answer_marks_missing_runs_but_an_empty_one_withdraws_nothing(tmp_path):
    db = metadata_db(load_settings({"MICROFETCH_DATA_DIR": str(tmp_path / "data")}))
    merge_answer(db, 562, answer(tmp_path / "a.tsv", ("ERR1000001", "2026-01-01"),
                                 ("ERR1000002", "2026-01-01")), Tally(), full=True)

    for body in ("", "\t".join(FIELDS) + "\n"):  # no body, or a header alone
        (tmp_path / "b.tsv").write_text(body)
        empty = Tally()
        merge_answer(db, 562, tmp_path / "b.tsv", empty, full=True)
        assert listed(db) == {"ERR1000001": 1, "ERR1000002": 1}
        assert "no run was marked withdrawn" in empty.warnings[0]

    tally = Tally()
    merge_answer(db, 562, answer(tmp_path / "c.tsv", ("ERR1000002", "2026-01-01")), tally,
                 full=True)
    assert (tally.withdrawn, tally.new, tally.changed) == (1, 0, 0)
    assert listed(db) == {"ERR1000001": 0, "ERR1000002": 1}


def test_only_rows_a_check_changed_are_handed_to_the_filter(tmp_path):
    db = metadata_db(load_settings({"MICROFETCH_DATA_DIR": str(tmp_path / "data")}))
    merge_answer(db, 562, answer(tmp_path / "a.tsv", ("ERR1000001", "2026-01-01"),
                                 ("ERR1000002", "2026-01-01")), Tally(), full=True)
    first = max(row[3] for rows in metadata_lines(db, 562, 0, 10) for row in rows)

    tally = Tally()
    merge_answer(db, 562, answer(tmp_path / "b.tsv", ("ERR1000001", "2026-01-01"),
                                 ("ERR1000002", "2026-03-01"), ("ERR1000003", "2026-03-01")),
                 tally, full=False)

    assert (tally.seen, tally.new, tally.changed) == (3, 1, 1)
    later = [row[0] for rows in metadata_lines(db, 562, first, 1) for row in rows]
    assert later == ["ERR1000002", "ERR1000003"]  # one page per run: the pages join up
