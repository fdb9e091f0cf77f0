"""Atomic directory writes and checksums, shared by model pulls and adapter builds."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp dir next to `final`; on success rename it to `final`, on any error delete it.

    Readers therefore see either no directory or a complete one, never a half-written model.
    The temp name starts with '.', so adapter discovery skips it while it is being written.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; models and adapters are read by other users (containers)
    try:
        yield staging
        if final.exists():  # a forced rebuild: move the old one aside so `final` is swapped, not merged
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_tree(root: Path, exclude: set[str] = frozenset()) -> dict[str, dict]:
    """{relative path: {sha256, size}} for every file under root (the manifest's 'files')."""
    return {
        str(path.relative_to(root)): {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in sorted(root.rglob("*")) if path.is_file() and str(path.relative_to(root)) not in exclude
    }


def tree_matches_sizes(root: Path, files: dict[str, dict]) -> bool:
    """Cheap cache check: every manifest file is there with its recorded size (hashing is `--verify`)."""
    return bool(files) and all(
        (root / rel).is_file() and (root / rel).stat().st_size == meta["size"] for rel, meta in files.items())
