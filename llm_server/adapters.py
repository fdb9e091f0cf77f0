"""The adapters found on disk, named by common.adapters' rule (`<family>-v<N>`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from common.adapters import parse_adapter_name


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
