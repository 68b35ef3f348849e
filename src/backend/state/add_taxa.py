"""Adding taxa to the registry: one implementation for `add_taxa.py`, the CLI and the web."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backend.errors import OperationError
from backend.state.registry import Registry, Taxon, parse_taxon_id


class UnknownToEna(Exception):
    """Raised by a look-up when ENA's taxonomy service does not know the id."""


#: Look up a taxon's scientific name; raises UnknownToEna or OperationError.
Lookup = Callable[[int], str]


@dataclass(frozen=True)
class Outcome:
    """What happened to one id given by a person."""

    given: str
    taxon_id: int | None
    result: str  # "added", "present", "rejected"
    detail: str = ""
    name: str = ""

    def line(self) -> str:
        if self.result == "added":
            name = f" ({self.name})" if self.name else ""
            suffix = f"; {self.detail}" if self.detail else ""
            return f"added {self.taxon_id}{name}{suffix}"
        if self.result == "present":
            return f"already present {self.taxon_id}"
        return f"rejected {self.given!r}: {self.detail}"

    def to_json(self) -> dict[str, object]:
        return {
            "given": self.given, "taxonomy_id": self.taxon_id, "result": self.result,
            "detail": self.detail, "scientific_name": self.name,
        }


def add_taxa(
    registry: Registry,
    given: Sequence[str],
    *,
    priority: int = 0,
    lookup: Lookup | None = None,
    actor: str | None = None,
) -> list[Outcome]:
    """Validate every id, look new ones up, then add the valid ones in one atomic write."""
    outcomes: dict[str, Outcome] = {}
    candidates: dict[int, str] = {}
    for text in given:
        if text in outcomes or _already_given(text, candidates):
            continue
        try:
            taxon_id = parse_taxon_id(text)
        except ValueError as exc:
            outcomes[text] = Outcome(text, None, "rejected", str(exc))
            continue
        candidates[taxon_id] = text

    existing = {row.taxonomy_id for row in registry.load()}
    names: dict[int, tuple[str, str]] = {}
    for taxon_id, text in candidates.items():
        if taxon_id in existing or lookup is None:
            continue
        try:
            names[taxon_id] = (lookup(taxon_id), "")
        except UnknownToEna as exc:
            outcomes[text] = Outcome(text, taxon_id, "rejected", str(exc))
        except OperationError as exc:
            names[taxon_id] = ("", f"warning: name not checked ({exc})")

    with registry.transaction(actor) as table:
        for taxon_id, text in candidates.items():
            if text in outcomes:
                continue
            if taxon_id in table:
                outcomes[text] = Outcome(text, taxon_id, "present")
                continue
            name, warning = names.get(taxon_id, ("", ""))
            # A new row starts at stage check, status new: the row's defaults.
            table[taxon_id] = Taxon(taxonomy_id=taxon_id, scientific_name=name,
                                    priority=priority)
            outcomes[text] = Outcome(text, taxon_id, "added", warning, name)
    return [outcomes[text] for text in _unique(given) if text in outcomes]


def _already_given(text: str, candidates: dict[int, str]) -> bool:
    """`562` and `0562` name the same taxon: handle it once."""
    try:
        return parse_taxon_id(text) in candidates
    except ValueError:
        return False


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def summary(outcomes: Sequence[Outcome]) -> str:
    counts = {kind: sum(o.result == kind for o in outcomes)
              for kind in ("added", "present", "rejected")}
    return (
        f"{counts['added']} added, {counts['present']} already present, "
        f"{counts['rejected']} rejected"
    )
