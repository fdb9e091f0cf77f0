"""Student personas: one YAML file each in PRACTICE_PERSONAS_DIR (the file name without .yaml is the id)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

DEFAULT_PERSONAS_DIR = Path(__file__).parent / "personas"
INTENT_GROUPS = ("open_question", "closed_question", "reflection", "advice", "affirmation", "giving_information",
                 "other", "exhausted")


class Persona(BaseModel):
    id: str = Field(description="The file name without .yaml; what POST /v1/roleplay's `persona` names.")
    name: str
    level: str = Field(description="Year and course of study.")
    language: Literal["en", "zh"] = Field(description="The language the persona speaks (and the engines answer in).")
    writing_task: str
    problem: str = Field(description="The writing problem, in a few words.")
    problem_summary: str = Field(description="The problem in one sentence (goes into the LLM prompt).")
    problem_keywords: list[str] = Field(description="Words that show a reply is about the problem (in-character check).")
    emotional_state: str
    opening: str = Field(description="The persona's first line.")
    will_disclose: list[str] = Field(description="What the persona tells, one item at a time, when helped well.")
    will_not_disclose: list[str] = Field(description="What the persona keeps to themself.")
    replies: dict[str, list[str]] = Field(default_factory=dict, exclude=True,
                                          description="The rules engine's templates per intent group.")

    def mentions_problem(self, text: str) -> bool:
        lowered = text.lower()
        return any(keyword.lower() in lowered for keyword in self.problem_keywords)


class PersonaSummary(BaseModel):
    """What GET /v1/personas lists (no templates, no secrets beyond what a trainer needs)."""

    id: str
    name: str
    level: str
    language: str
    writing_task: str
    problem: str
    emotional_state: str
    opening: str
    will_disclose: list[str]
    will_not_disclose: list[str]


class PersonaError(ValueError):
    pass


def load_persona(path: Path) -> Persona:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PersonaError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PersonaError(f"{path}: not a mapping")
    data.setdefault("id", path.stem)
    persona = Persona.model_validate(data)
    missing = [group for group in INTENT_GROUPS if not persona.replies.get(group)]
    if missing:
        raise PersonaError(f"{path}: replies lack {', '.join(missing)}")
    return persona


def load_personas(folder: Path) -> dict[str, Persona]:
    personas = {}
    for path in sorted(Path(folder).glob("*.yaml")) + sorted(Path(folder).glob("*.yml")):
        persona = load_persona(path)
        personas[persona.id] = persona
    if not personas:
        raise PersonaError(f"no persona files (*.yaml) in {folder}")
    return personas


def summary(persona: Persona) -> PersonaSummary:
    return PersonaSummary(**persona.model_dump(include=set(PersonaSummary.model_fields)))
