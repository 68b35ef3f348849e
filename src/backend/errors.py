"""Exceptions that carry their context; only the CLI turns them into exit codes."""

from __future__ import annotations

#: Exit codes used by every command.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class MicrofetchError(Exception):
    """Base class: the message names the input, the problem and what to do."""

    exit_code = EXIT_FAILED


class UsageError(MicrofetchError):
    """Bad input or usage: a bad id, a bad setting, a malformed file."""

    exit_code = EXIT_USAGE


class OperationError(MicrofetchError):
    """An operation failed: a service unreachable, a transfer that did not complete."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SettingsError(UsageError):
    """One or more environment variables hold values that cannot be used."""


class RegistryError(UsageError):
    """A state file (registry, accession list) is malformed; it is left untouched."""

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        where = f"{path} line {line}" if line is not None else f"{path}"
        super().__init__(
            f"{where}: {problem}. Fix or remove that line by hand; "
            "microfetch will not write the file while it is malformed."
        )
        self.path = path
        self.line = line
        self.problem = problem


class UnknownTaxonError(UsageError):
    """A taxonomy id that is not in the registry."""

    def __init__(self, taxon_id: int, registry_path: object) -> None:
        super().__init__(
            f"taxon {taxon_id} is not in the registry {registry_path}; "
            f"add it first with `add_taxa.py {taxon_id}`"
        )
        self.taxon_id = taxon_id
