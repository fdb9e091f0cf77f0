"""Chat modes: a system prompt plus an optional LoRA adapter family, and the `_rag` suffix.

Pure logic. Modes come with defaults here and can be overridden or extended by a YAML file
(CHAT_MODES_FILE) of the shape:  {mode_name: {system_prompt: str, adapter: str | null, max_tokens: int,
moderation: {category: action}}} (moderation: see docs/safety.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RAG_SUFFIX = "_rag"


@dataclass(frozen=True)
class ChatMode:
    name: str
    system_prompt: str
    adapter: str | None = None  # an adapter family ("peer"); the newest loaded version serves it
    max_tokens: int | None = None  # the mode's default answer length (else CHAT_DEFAULT_MAX_TOKENS)
    # moderation actions for this mode, {category: action} (ai_service/moderation.py, docs/safety.md)
    moderation: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


DEFAULT_MODES: dict[str, ChatMode] = {
    "tutor": ChatMode(
        "tutor",
        "You are a patient writing tutor for students in a writing course. Explain clearly, "
        "point to the one most important improvement first, and ask one question that helps "
        "the student think. Do not write the student's assignment for them.",
    ),
    "peer": ChatMode(
        "peer",
        "You are a friendly peer writing buddy: a fellow student who reads a classmate's draft, "
        "says what works, and suggests one or two concrete changes in a casual, encouraging tone.",
        adapter="peer",
    ),
}


class UnknownModeError(ValueError):
    def __init__(self, mode: str, valid: list[str]):
        self.valid = valid
        super().__init__(f"Unknown mode {mode!r}. Valid modes: {', '.join(valid)}")


def load_modes(path: str | None) -> dict[str, ChatMode]:
    modes = dict(DEFAULT_MODES)
    if not path:
        return modes
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for name, spec in raw.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name.endswith(RAG_SUFFIX):
            raise ValueError(f"{path}: invalid mode name {name!r}")
        if not isinstance(spec, dict) or not isinstance(spec.get("system_prompt"), str):
            raise ValueError(f"{path}: mode {name!r} needs a system_prompt string")
        max_tokens = spec.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError(f"{path}: mode {name!r}: max_tokens must be a positive integer")
        moderation = spec.get("moderation") or {}
        if not isinstance(moderation, dict):
            raise ValueError(f"{path}: mode {name!r}: moderation must be a mapping of category to action")
        modes[name] = ChatMode(name, spec["system_prompt"], spec.get("adapter"), max_tokens, dict(moderation))
    return modes


def valid_mode_names(modes: dict[str, ChatMode]) -> list[str]:
    return sorted(modes) + sorted(name + RAG_SUFFIX for name in modes)


def resolve_mode(requested: str, modes: dict[str, ChatMode]) -> tuple[ChatMode, bool]:
    """Returns the mode and whether retrieval is asked for (`tutor_rag` -> tutor, True)."""
    base, rag = requested, False
    if requested.endswith(RAG_SUFFIX):
        base, rag = requested[: -len(RAG_SUFFIX)], True
    if base not in modes:
        raise UnknownModeError(requested, valid_mode_names(modes))
    return modes[base], rag

