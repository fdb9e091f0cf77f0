"""manifest.json written beside every adapter: what it was trained from, how, and how it did.

It is what makes an adapter reproducible and auditable after it has been copied into the
llm_server adapters directory.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


def file_digest(path: str | Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    lines = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return {"path": str(path), "sha256": digest.hexdigest(), "lines": lines}


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def build(*, name: str, stage: str, base_model: str, config: dict, data_files: list[str], metrics: dict,
          extra: dict | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "stage": stage,
        "base_model": base_model,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": [file_digest(p) for p in data_files],
        "config": config,
        "metrics": metrics,
        "environment": {"python": platform.python_version(),
                        **versions("torch", "transformers", "peft", "trl", "datasets", "accelerate")},
        **(extra or {}),
    }


def write(directory: str | Path, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def read(directory: str | Path) -> dict | None:
    path = Path(directory) / MANIFEST_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
