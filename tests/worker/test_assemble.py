"""The assembly step on a worker: reads simulated from a known genome come back as contigs of
that genome, with a report; reads that cannot assemble come back as a failed report."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from assemble_run import REPORT_KEYS, AssemblyFailed, Reads, Stats, check_sanity, find_reads, n50

from .conftest import BIN, GENOME_LENGTH
from .simulate import count_fastq

KMER = 31


def run_folder(parent: Path, run: str, files: dict[str, Path]) -> Path:
    """A run's folder as the fetch step leaves it: its verified FASTQ files."""
    folder = parent / run
    folder.mkdir()
    for name, source in files.items():
        shutil.copyfile(source, folder / name)
    return folder


def paired(parent: Path, run: str, reads: list[Path]) -> Path:
    return run_folder(parent, run, {f"{run}_1.fastq.gz": reads[0],
                                    f"{run}_2.fastq.gz": reads[1]})


def assemble(folder: Path, run: str, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BIN / "assemble_run.py"), str(folder), "--run", run,
         "--threads", "2", "--memory-gb", "4", *extra],
        capture_output=True, text=True, timeout=300, env=env)


def report(folder: Path, run: str) -> dict:
    return json.loads((folder / f"{run}.assembly.json").read_text())


def contigs(path: Path) -> list[str]:
    sequences: list[str] = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                sequences.append("")
            else:
                sequences[-1] += line.strip()
    return sequences


def kmers(sequence: str) -> set[str]:
    return {sequence[i:i + KMER] for i in range(len(sequence) - KMER + 1)}


def reverse_complement(sequence: str) -> str:
    return sequence.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def assembled(sample, noise, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One run as ENA often has them (a pair and an unpaired file), assembled with the
    defaults, so its reads are not kept; several tests read its results."""
    folder = run_folder(tmp_path_factory.mktemp("assembled"), "ERR1",
                        {"ERR1_1.fastq.gz": sample.reads[0], "ERR1_2.fastq.gz": sample.reads[1],
                         "ERR1.fastq.gz": noise[0]})
    return folder, assemble(folder, "ERR1")


def test_a_simulated_genome_comes_back_as_contigs_within_two_percent_of_its_length(
        sample, assembled):
    folder, result = assembled

    assert result.returncode == 0, result.stderr
    got = report(folder, "ERR1")
    assert got["status"] == "assembled", got["error"]
    assert abs(got["total_length"] - GENOME_LENGTH) <= 0.02 * GENOME_LENGTH
    assert 1 <= got["contigs"] <= 5
    assert got["n50"] >= 10_000
    assert got["largest_contig"] >= got["n50"]
    genome_gc = (sample.genome.count("G") + sample.genome.count("C")) / GENOME_LENGTH
    assert abs(got["gc"] - genome_gc) < 0.01
    sequences = contigs(folder / "ERR1.contigs.fa.gz")
    assert sum(map(len, sequences)) == got["total_length"]
    assert len(sequences) == got["contigs"]
    assert min(map(len, sequences)) >= 200
    # The contigs are the genome, not merely as long as it: nearly every k-mer is in it.
    truth = kmers(sample.genome) | kmers(reverse_complement(sample.genome))
    found = [k for s in sequences for k in kmers(s)]
    assert sum(k in truth for k in found) >= 0.99 * len(found)


def test_the_report_counts_the_reads_and_names_the_tools_and_their_commands(
        sample, assembled):
    folder, _ = assembled
    got = report(folder, "ERR1")

    assert set(got) == set(REPORT_KEYS)
    reads = [count_fastq(path) for path in sample.reads]
    assert got["reads_in"] == sum(r for r, _ in reads)
    assert got["bases_in"] == sum(b for _, b in reads)
    assert 0 < got["bases_trimmed"] <= got["bases_in"]
    assert 27 <= got["depth"] <= 33
    assert got["depth"] == round(got["bases_in"] / got["total_length"], 1)
    assert got["layout"] == "paired"
    assert got["inputs"] == ["ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]
    assert "ERR1.fastq.gz" not in " ".join(got["commands"].values())
    assert set(got["versions"]) == {"fastp", "skesa"}
    assert all(got["versions"].values())
    assert got["commands"]["fastp"].startswith("fastp -w 2 ")
    assert "-I ERR1_2.fastq.gz" in got["commands"]["fastp"]
    assert "--cores 2 --memory 4 " in got["commands"]["skesa"]
    assert got["contigs_file"] == "ERR1.contigs.fa.gz"
    assert got["contigs_md5"] == md5(folder / "ERR1.contigs.fa.gz")
    assert got["contigs_bytes"] == (folder / "ERR1.contigs.fa.gz").stat().st_size
    assert got["error"] == ""


def test_after_a_successful_assembly_only_the_contigs_and_the_report_remain(assembled):
    """The unpaired file goes too: with ``assembly`` nothing but these comes home."""
    folder, _ = assembled

    assert sorted(p.name for p in folder.iterdir()) == ["ERR1.assembly.json",
                                                        "ERR1.contigs.fa.gz"]
    assert report(folder, "ERR1")["reads_deleted"] is True


def test_running_the_step_again_after_success_changes_nothing(assembled, tmp_path):
    folder = tmp_path / "ERR1"
    shutil.copytree(assembled[0], folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    result = assemble(folder, "ERR1")

    assert result.returncode == 0, result.stderr
    assert "already assembled" in result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_reads_kept_with_keep_reads_go_on_a_later_run_without_it_with_no_new_assembly(
        sample, tmp_path):
    folder = paired(tmp_path, "ERR2", sample.reads)
    reads = {p.name: md5(p) for p in folder.iterdir()}

    kept = assemble(folder, "ERR2", "--keep-reads")

    assert kept.returncode == 0, kept.stderr
    first = report(folder, "ERR2")
    assert first["status"] == "assembled", first["error"]
    assert first["reads_deleted"] is False
    assert {name: md5(folder / name) for name in reads} == reads

    dropped = assemble(folder, "ERR2")

    assert dropped.returncode == 0, dropped.stderr
    assert "already assembled" in dropped.stderr
    second = report(folder, "ERR2")
    assert second["reads_deleted"] is True
    assert second == {**first, "reads_deleted": True}
    assert sorted(p.name for p in folder.iterdir()) == ["ERR2.assembly.json",
                                                        "ERR2.contigs.fa.gz"]


def test_random_reads_give_a_failed_report_with_the_assemblers_reason_and_keep_their_reads(
        noise, tmp_path):
    folder = paired(tmp_path, "ERR3", noise)

    result = assemble(folder, "ERR3")

    assert result.returncode == 0, result.stderr
    got = report(folder, "ERR3")
    assert set(got) == set(REPORT_KEYS)
    assert got["status"] == "failed"
    # The assembler's own last words say why, after the exit status.
    assert got["error"].startswith("skesa exited with 1: ")
    assert len(got["error"].splitlines()) == 5
    assert got["contigs_file"] is None and got["contigs_md5"] is None
    assert got["reads_in"] == 10_000
    assert not (folder / "ERR3.contigs.fa.gz").exists()
    assert (folder / "ERR3_1.fastq.gz").exists() and (folder / "ERR3_2.fastq.gz").exists()
    assert not (folder / ".assembly-work").exists()


def test_an_assembly_below_the_total_length_limit_is_failed_with_its_numbers(sample, tmp_path):
    folder = paired(tmp_path, "ERR4", sample.reads)

    result = assemble(folder, "ERR4", "--min-total-length", "60000")

    assert result.returncode == 0, result.stderr
    got = report(folder, "ERR4")
    assert got["status"] == "failed"
    assert "below the limit of 60000 bp (--min-total-length)" in got["error"]
    assert abs(got["total_length"] - GENOME_LENGTH) <= 0.02 * GENOME_LENGTH
    assert got["contigs_file"] is None
    assert not (folder / "ERR4.contigs.fa.gz").exists()
    assert (folder / "ERR4_1.fastq.gz").exists()


def test_megahit_is_the_other_assembler_in_the_table(sample, tmp_path):
    if shutil.which("megahit") is None:
        pytest.fail("megahit not on PATH: scripts/test.sh installs it (Debian: megahit)")
    folder = paired(tmp_path, "ERR5", sample.reads)

    result = assemble(folder, "ERR5", "--assembler", "megahit")

    assert result.returncode == 0, result.stderr
    got = report(folder, "ERR5")
    assert got["status"] == "assembled", got["error"]
    assert abs(got["total_length"] - GENOME_LENGTH) <= 0.02 * GENOME_LENGTH
    assert set(got["versions"]) == {"fastp", "megahit"}
    assert " -t 2 -m 4000000000 " in got["commands"]["megahit"]


def test_an_unknown_assembler_is_a_usage_error_naming_the_known_ones(noise, tmp_path):
    folder = paired(tmp_path, "ERR6", noise)

    result = assemble(folder, "ERR6", "--assembler", "spades")

    assert result.returncode == 2
    assert "unknown assembler 'spades'" in result.stderr
    assert "skesa" in result.stderr and "megahit" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["ERR6_1.fastq.gz", "ERR6_2.fastq.gz"]


def test_a_worker_without_fastp_exits_3_and_blames_no_run(noise, tmp_path):
    folder = paired(tmp_path, "ERR7", noise)
    empty = tmp_path / "empty-bin"
    empty.mkdir()

    result = assemble(folder, "ERR7", env={**os.environ, "PATH": str(empty)})

    assert result.returncode == 3
    assert "fastp" in result.stderr
    assert not (folder / "ERR7.assembly.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["ERR7_1.fastq.gz", "ERR7_2.fastq.gz"]


def processes_working_in(folder: Path) -> list[int]:
    """Ids of the processes whose current folder is ``folder`` (Linux: /proc/<pid>/cwd)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    return found


def test_a_stopped_step_takes_its_assembler_down_with_it_and_writes_nothing(
        sample, tmp_path):
    folder = paired(tmp_path, "ERR11", sample.reads).resolve()
    step = subprocess.Popen(
        [sys.executable, str(BIN / "assemble_run.py"), str(folder), "--run", "ERR11",
         "--threads", "2", "--memory-gb", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # until SKESA runs, at most a minute
            if (folder / ".assembly-work" / "skesa.log").exists() or step.poll() is not None:
                break
            time.sleep(0.1)
        assert step.poll() is None, "the step ended before SKESA started"
        step.send_signal(signal.SIGTERM)
        _, stderr = step.communicate(timeout=60)
    finally:
        step.kill()

    assert step.returncode == 143, stderr
    assert processes_working_in(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == ["ERR11_1.fastq.gz", "ERR11_2.fastq.gz"]


def test_a_folder_without_fastq_files_gets_a_failed_report(tmp_path):
    folder = run_folder(tmp_path, "ERR8", {})

    result = assemble(folder, "ERR8")

    assert result.returncode == 0, result.stderr
    got = report(folder, "ERR8")
    assert (got["status"], got["error"]) == ("failed", "no FASTQ files in the run folder")


def test_the_pair_is_chosen_over_an_unpaired_file_and_a_lone_file_is_single_end(tmp_path):
    for name in ["ERR9.fastq.gz", "ERR9_2.fastq.gz", "ERR9_1.fastq.gz", "notes.txt"]:
        (tmp_path / name).write_text("")
    assert find_reads(tmp_path) == Reads(("ERR9_1.fastq.gz", "ERR9_2.fastq.gz"))

    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "ERR10_1.fastq.gz").write_text("")
    assert find_reads(lone) == Reads(("ERR10_1.fastq.gz",))

    (lone / "ERR10.fastq.gz").write_text("")
    with pytest.raises(AssemblyFailed, match="cannot tell"):
        find_reads(lone)


def test_n50_is_the_contig_length_where_the_longest_contigs_reach_half_the_total():
    assert n50([100, 400, 200, 300]) == 300
    assert n50([1000]) == 1000
    assert n50([]) == 0


def test_the_sanity_limits_name_the_number_and_the_option_that_failed():
    fragmented = Stats(contigs=40, total_length=50_000, n50=1_500, largest_contig=4_000, gc=0.5)

    check_sanity(fragmented, min_contig=200, min_total=45_000, min_n50=1_000)
    with pytest.raises(AssemblyFailed, match=r"N50 1500 bp is below the limit of 5000 bp"):
        check_sanity(fragmented, min_contig=200, min_total=45_000, min_n50=5_000)
    with pytest.raises(AssemblyFailed, match=r"--min-total-length"):
        check_sanity(fragmented, min_contig=200, min_total=60_000, min_n50=0)
    with pytest.raises(AssemblyFailed, match="no contigs of at least 500 bp"):
        check_sanity(Stats(0, 0, 0, 0, 0.0), min_contig=500, min_total=0, min_n50=0)
