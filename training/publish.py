"""publish / rollback: versioned adapters in the llm_server adapters directory, hot-loaded over its API.

Names are `<family>-v<N>`. Publishing copies into a hidden temp dir and renames it into place
(atomic on one filesystem), then asks llm_server to load it; a failed load moves it aside again
so the directory never advertises an adapter the server refused.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from common.adapters import is_family, next_version, versions_of
from common.auth import SERVICE_TOKEN_HEADER
from training.config import tutorstack_home

# Only the adapter itself: a tokenizer inside a LoRA dir makes vLLM warn (it serves the base tokenizer anyway).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "manifest.json", "README.md")


def adapters_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get("LLM_ADAPTERS_DIR") or tutorstack_home() / "adapters")


def control_url(override: str | None = None) -> str:
    return (override or os.environ.get("LLM_SERVER_URL") or "http://127.0.0.1:8010").rstrip("/")


def published(directory: Path) -> list[str]:
    """The adapter directories' names in the adapters directory (common.adapters tells the versions apart)."""
    return [entry.name for entry in directory.iterdir() if entry.is_dir()] if directory.is_dir() else []


def retired_dir(directory: Path) -> Path:
    # Beside the adapters dir, not inside it, so llm_server's scan never sees retired versions.
    return directory.parent / f"{directory.name}-retired"


def _call(url: str, path: str, payload: dict, tolerate: tuple[int, ...] = ()) -> None:
    import httpx

    token = os.environ.get("LLM_SERVER_API_TOKEN", "")
    headers = {SERVICE_TOKEN_HEADER: token} if token else {}
    response = httpx.post(f"{url}{path}", json=payload, timeout=300, headers=headers)
    if response.status_code >= 400 and response.status_code not in tolerate:
        raise RuntimeError(f"llm_server {path} failed ({response.status_code}): {response.text[:500]}")


def publish(adapter: str, family: str, *, directory: str | None = None, url: str | None = None,
            load: bool = True) -> dict:
    source = Path(adapter)
    if not (source / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    if not is_family(family):
        raise ValueError(f"family {family!r}: lowercase letters, digits, '_', '.', '-' (as llm_server requires), "
                         "without a -vN suffix")
    root = adapters_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = next_version(published(root), family)
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for file in ADAPTER_FILES:
        if (source / file).exists():
            shutil.copy2(source / file, tmp / file)
    target = root / name
    tmp.rename(target)
    if load:
        try:
            _call(control_url(url), "/v1/adapters/load", {"name": name, "path": str(target.resolve())})
        except Exception:
            _retire(root, target)
            raise
    return {"name": name, "path": str(target), "loaded": load}


def _retire(root: Path, target: Path) -> Path:
    destination = retired_dir(root) / f"{target.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(target), str(destination))
    return destination


def rollback(family: str, *, directory: str | None = None, url: str | None = None, unload: bool = True) -> dict:
    """Unload the latest version and move it aside; the previous version is what gets served."""
    root = adapters_dir(directory)
    found = versions_of(published(root), family)
    if not found:
        raise FileNotFoundError(f"no published versions of {family!r} in {root}")
    name = str(found[-1])
    if unload:
        # 404: already not loaded (e.g. the server restarted without it); retiring it is still right.
        _call(control_url(url), "/v1/adapters/unload", {"name": name}, tolerate=(404,))
    moved = _retire(root, root / name)
    previous = str(found[-2]) if len(found) > 1 else None
    return {"removed": name, "moved_to": str(moved), "now_serving": previous}
