"""Settings from the environment: defaults, validation, documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.errors import SettingsError
from backend.settings import Settings, load_settings, setting_specs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_follow_the_contract():
    settings = load_settings({})
    assert settings.csv_path == Path("microfetch.csv")
    assert settings.data_dir == Path("data")
    assert settings.log_dir == Path("data/logs")
    assert settings.backend == "local"
    assert settings.max_workers == 2
    assert settings.fastq_scheme == "https"
    assert settings.fastq_hosts == ("ftp.sra.ebi.ac.uk",)
    assert settings.bind == "127.0.0.1:8000"
    assert settings.callback_url == "http://127.0.0.1:8000"


def test_the_log_dir_follows_the_data_dir_unless_set():
    assert load_settings({"MICROFETCH_DATA_DIR": "/srv/mf"}).log_dir == Path("/srv/mf/logs")
    settings = load_settings(
        {"MICROFETCH_DATA_DIR": "/srv/mf", "MICROFETCH_LOG_DIR": "/var/log/mf"}
    )
    assert settings.log_dir == Path("/var/log/mf")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MICROFETCH_HEARTBEAT_SECONDS", "abc", "a whole number of seconds of at least 1"),
        ("MICROFETCH_HEARTBEAT_SECONDS", "0", "at least 1"),
        ("MICROFETCH_BACKEND", "aws", "one of local, ssh, digitalocean"),
        ("MICROFETCH_FASTQ_SCHEME", "gopher", "one of https, http, ftp"),
        ("MICROFETCH_LOG_JSON", "perhaps", "true or false"),
        ("MICROFETCH_ENA_PORTAL_URL", "ftp://x", "an http:// or https:// URL"),
        ("MICROFETCH_BIND", "8000", "host:port"),
        ("MICROFETCH_FASTQ_HOSTS", "bad host!", "host or host:port"),
        ("MICROFETCH_ENA_MAX_RPS", "60", "at most 49"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(name, value, expected):
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    message = str(caught.value)
    assert f"{name}={value!r}" in message
    assert expected in message


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        load_settings({"MICROFETCH_MAX_WORKERS": "many", "MICROFETCH_RECHECK_HOURS": "-1"})
    assert "MICROFETCH_MAX_WORKERS" in str(caught.value)
    assert "MICROFETCH_RECHECK_HOURS" in str(caught.value)


def test_settings_are_frozen():
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.max_workers = 5  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_lists_are_parsed_from_commas():
    settings = load_settings({"MICROFETCH_SELECT_PLATFORMS": "illumina, bgiseq",
                              "MICROFETCH_FASTQ_HOSTS": "ftp.sra.ebi.ac.uk,127.0.0.1:8080"})
    assert settings.select_platforms == ("ILLUMINA", "BGISEQ")
    assert settings.fastq_hosts == ("ftp.sra.ebi.ac.uk", "127.0.0.1:8080")


def test_the_readme_table_documents_every_setting_and_no_other():
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README.read_text(), flags=re.MULTILINE))
    assert documented == {spec["env"] for spec in setting_specs()}


def test_the_docs_configuration_page_documents_every_setting_with_its_default():
    page = (README.parent / "docs" / "src" / "configuration.md").read_text()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (.+?) \| (.+?) \|$", page, flags=re.MULTILINE)
    documented = {name: default.strip("`") for name, default, _ in rows}
    assert documented == {spec["env"]: spec["default"] for spec in setting_specs()}
