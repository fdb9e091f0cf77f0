"""Adapter names, versions and the adapters found on disk.

An adapter is named `<family>-v<N>` (e.g. `peer-v2`): the family is what a chat mode asks
for, the version lets a new training run be published next to the old one and rolled back.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

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


def latest_version(names: list[str] | set[str], family: str) -> str | None:
    """The newest `<family>-vN` among names (numeric order, so v10 beats v9); None if there is none."""
    versions = []
    for name in names:
        try:
            parsed = parse_adapter_name(name)
        except AdapterNameError:
            continue
        if parsed.family == family:
            versions.append(parsed)
    return str(max(versions)) if versions else None


def latest_by_family(names: list[str] | set[str]) -> dict[str, str]:
    families = {parse_adapter_name(n).family for n in names if ADAPTER_NAME_RE.match(n)}
    return {family: latest_version(names, family) for family in sorted(families)}


def next_version(names: list[str] | set[str], family: str) -> str:
    current = latest_version(names, family)
    return f"{family}-v{parse_adapter_name(current).version + 1 if current else 1}"


@dataclass(frozen=True)
class AdapterOnDisk:
    name: str
    family: str
    version: int
    path: str
    rank: int
    base_model: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def read_adapter(path: Path) -> AdapterOnDisk:
    """A PEFT adapter directory named `<family>-v<N>`; raises ValueError when it is not one."""
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise ValueError(f"{path} is not a PEFT adapter (no adapter_config.json)")
    parsed = parse_adapter_name(path.name)
    config = json.loads(config_path.read_text())
    return AdapterOnDisk(name=str(parsed), family=parsed.family, version=parsed.version, path=str(path.resolve()),
                         rank=int(config.get("r", 0)), base_model=config.get("base_model_name_or_path"))


def discover_adapters(adapters_dir: Path) -> list[AdapterOnDisk]:
    """Every well-named adapter directly under adapters_dir, in name order. Others are skipped
    (temp dirs of a build in progress start with '.', so they never show up half written)."""
    if not adapters_dir.is_dir():
        return []
    found = []
    for child in sorted(adapters_dir.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        try:
            found.append(read_adapter(child))
        except (ValueError, json.JSONDecodeError):
            continue
    return found
