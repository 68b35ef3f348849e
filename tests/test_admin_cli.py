"""status, attention, priority and remove-taxa through the CLI."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import cli_env


@pytest.fixture
def two_taxa(run_cli):
    assert run_cli("--offline", "562", "1280", add_taxa=True).returncode == 0


def test_status_prints_a_readable_table(run_cli, two_taxa):
    result = run_cli("status")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "taxon", "name", "stage", "status", "last", "checked", "workers", "priority", "needs",
        "attention",
    ]
    assert lines[1].split()[:5] == ["562", "check", "new", "never", "0"]


def test_status_json_prints_typed_rows(run_cli, two_taxa):
    run_cli("priority", "562", "3")
    result = run_cli("status", "562", "--json")
    assert result.returncode == 0
    (row,) = json.loads(result.stdout)
    assert row["taxonomy_id"] == 562
    assert row["priority"] == 3
    assert row["generated_warning"] is False
    assert row["droplet_ips"] == []
    assert row["last_checked"] == ""
    assert row["stage"] == "check"
    assert row["stage_name"] == "check ENA for runs"
    assert row["last_run_status"] == ""


def test_status_of_an_unknown_id_is_a_usage_error(run_cli, two_taxa):
    result = run_cli("status", "999")
    assert result.returncode == 2
    assert "999 is not in the registry" in result.stderr


def test_status_on_an_empty_registry_says_how_to_add_taxa(run_cli, workdir):
    result = run_cli("status")
    assert result.returncode == 0
    assert "add_taxa.py" in result.stdout
    assert (workdir / "microfetch.csv").read_text().startswith("taxonomy_id,")


def test_attention_set_and_clear_park_and_release_a_taxon(run_cli, two_taxa, workdir):
    result = run_cli("attention", "set", "562", "--reason", "disk full at home")
    assert result.returncode == 0
    row = json.loads(run_cli("status", "562", "--json").stdout)[0]
    assert row["needs_attention"] == "disk full at home"
    result = run_cli("attention", "clear", "562")
    assert result.returncode == 0
    assert "was: disk full at home" in result.stdout
    row = json.loads(run_cli("status", "562", "--json").stdout)[0]
    assert row["needs_attention"] == ""
    history = [json.loads(line) for line in
               (workdir / "data" / "history.jsonl").read_text().splitlines()]
    fields = [(e["taxon"], e["field"], e["new"]) for e in history]
    assert (562, "needs_attention", "disk full at home") in fields
    assert (562, "needs_attention", "") in fields


def test_attention_on_an_unknown_taxon_says_how_to_add_it(run_cli, two_taxa):
    result = run_cli("attention", "set", "999", "--reason", "x")
    assert result.returncode == 2
    assert "add_taxa.py 999" in result.stderr


def test_priority_changes_the_priority(run_cli, two_taxa):
    result = run_cli("priority", "1280", "-2")
    assert result.returncode == 0
    assert "0 -> -2" in result.stdout
    assert json.loads(run_cli("status", "1280", "--json").stdout)[0]["priority"] == -2


def test_remove_taxa_removes_rows_and_keeps_files(run_cli, two_taxa, workdir):
    data = workdir / "data" / "genomes" / "562"
    data.mkdir(parents=True)
    (data / "keep.txt").write_text("x")
    result = run_cli("remove-taxa", "562")
    assert result.returncode == 0
    assert "removed 562" in result.stdout
    assert "were kept" in result.stdout
    assert [r["taxonomy_id"] for r in json.loads(run_cli("status", "--json").stdout)] == [1280]
    assert (data / "keep.txt").exists()


def test_remove_taxa_with_an_unknown_id_removes_nothing(run_cli, two_taxa):
    result = run_cli("remove-taxa", "562", "999")
    assert result.returncode == 2
    assert len(json.loads(run_cli("status", "--json").stdout)) == 2


def test_a_bad_setting_stops_the_command_naming_the_variable(run_cli, workdir):
    from .conftest import cli_env

    env = cli_env(workdir, MICROFETCH_HEARTBEAT_SECONDS="abc")
    result = run_cli("status", env=env)
    assert result.returncode == 2
    assert "MICROFETCH_HEARTBEAT_SECONDS='abc'" in result.stderr
    assert "whole number" in result.stderr


def test_an_unknown_command_is_a_usage_error(run_cli):
    assert run_cli("frobnicate").returncode == 2


def test_a_new_registry_is_announced_with_its_path(run_cli, tmp_path):
    result = run_cli("status")
    assert result.returncode == 0
    assert f"created a new registry {tmp_path / 'microfetch.csv'}" in result.stderr
    assert "created" not in run_cli("status").stderr  # only the first time


@pytest.mark.parametrize("kind", ["folder", "unreadable"])
def test_a_registry_path_that_cannot_be_read_is_a_usage_error_naming_it(run_cli, tmp_path,
                                                                       kind):
    target = tmp_path / "registry"
    if kind == "folder":
        target.mkdir()
    elif os.geteuid() == 0:
        # root reads any file: a path below a regular file cannot be read by anyone
        target.write_text("not a folder")
        target = target / "microfetch.csv"
    else:
        target.write_text("taxonomy_id\n562\n")
        target.chmod(0)
    env = cli_env(tmp_path, MICROFETCH_CSV=str(target))
    result = run_cli("status", env=env)
    assert result.returncode == 2, result.stderr
    assert f"cannot read the registry {target}" in result.stderr
    assert "MICROFETCH_CSV" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_history_says_which_interface_made_an_admin_change(run_cli, two_taxa):
    assert run_cli("priority", "562", "7").returncode == 0
    assert run_cli("attention", "set", "562", "--reason", "disk  full").returncode == 0
    history = json.loads(run_cli("history", "562", "--json").stdout)
    changes = [(h["field"], h["new"], h["actor"].split(":")[0]) for h in history
               if h["field"] in ("priority", "needs_attention")]
    assert changes == [("priority", "7", "cli"), ("needs_attention", "disk full", "cli")]
    text = run_cli("history", "562").stdout
    assert "needs_attention:  -> disk full  (cli:" in text
