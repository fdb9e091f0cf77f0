"""The adapter naming rule, for every service: an adapter is named `<family>-v<N>` (e.g. `peer-v2`).

The family is what a chat mode asks for; the version lets a new training run be published next to the
old one and rolled back. Families are lowercase (letters, digits, `_`, `.`, `-` inside), as vLLM's LoRA
names and the adapter directories on disk carry them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ADAPTER_NAME_RE = re.compile(r"^(?P<family>[a-z0-9](?:[a-z0-9_.-]*[a-z0-9])?)-v(?P<version>[0-9]+)$")
FAMILY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_.-]*[a-z0-9])?$")


class AdapterNameError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class AdapterName:
    family: str
    version: int

    def __str__(self) -> str:
        return f"{self.family}-v{self.version}"


def parse_adapter_name(name: str) -> AdapterName:
    match = ADAPTER_NAME_RE.match(name)
    if not match:
        raise AdapterNameError(
            f"adapter name {name!r} must look like <family>-v<N> (lowercase family, e.g. 'peer-v1')")
    return AdapterName(match["family"], int(match["version"]))


def is_family(name: str) -> bool:
    """A bare family ('peer') rather than a versioned name ('peer-v1')."""
    return bool(FAMILY_RE.match(name)) and not ADAPTER_NAME_RE.match(name)


def versions_of(names: Iterable[str], family: str) -> list[AdapterName]:
    """The family's versioned names among `names`, oldest first (numeric order: v10 after v9)."""
    found = []
    for name in names:
        match = ADAPTER_NAME_RE.match(name)
        if match and match["family"] == family:
            found.append(AdapterName(family, int(match["version"])))
    return sorted(found)


def latest_version(names: Iterable[str], family: str) -> str | None:
    """The newest `<family>-vN` among names; None if there is none."""
    found = versions_of(names, family)
    return str(found[-1]) if found else None


def latest_by_family(names: Iterable[str]) -> dict[str, str]:
    names = list(names)
    families = {parse_adapter_name(n).family for n in names if ADAPTER_NAME_RE.match(n)}
    return {family: latest_version(names, family) for family in sorted(families)}


def next_version(names: Iterable[str], family: str) -> str:
    found = versions_of(names, family)
    return str(AdapterName(family, found[-1].version + 1 if found else 1))
