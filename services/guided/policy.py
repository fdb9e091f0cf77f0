"""The tutoring policy: which move to make this turn, from the session state and the evaluation of
the student's latest turn. Pure Python, no I/O; the whole table is under unit test
(tests/guided/test_policy.py).

Moves: diagnose, ask, hint (level 1-3), worked_example (of a *different* problem), check_understanding,
summarise. The LLM never chooses; it only phrases the move chosen here.

The decision table (first matching row wins):

| state / evaluation                               | move                                   |
|--------------------------------------------------|----------------------------------------|
| already solved and understanding checked         | summarise                              |
| correct                                          | check_understanding (marks solved)     |
| understood, after solved or a worked example     | summarise                              |
| understood, otherwise                            | check_understanding                    |
| demand (answer asked for outright)               | hint, one level up (1 on a first turn); |
|                                                  | at level 3: worked_example once, then hint 3 |
| first turn, anything else                        | diagnose                               |
| wrong or stuck (a failed attempt)                | hint, one level up; at level 3: worked_example once, then hint 3 |
| question or attempt, last move was not ask       | ask                                    |
| question or attempt, right after an ask          | hint, one level up (no ask loops)      |
| attempt with no known answer, after 2 attempts   | check_understanding                    |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from services.guided.evaluate import Evaluation

Move = Literal["diagnose", "ask", "hint", "worked_example", "check_understanding", "summarise"]
MOVES: tuple[str, ...] = ("diagnose", "ask", "hint", "worked_example", "check_understanding", "summarise")
MAX_HINT_LEVEL = 3


@dataclass(frozen=True)
class SessionState:
    turn: int = 0  # student turns already handled
    hint_level: int = 0  # the highest hint level given so far
    failed_attempts: int = 0  # wrong or stuck turns
    demands: int = 0  # requests for the answer outright
    attempts: int = 0  # substantive turns without a checkable answer
    diagnosed: bool = False
    example_given: bool = False
    solved: bool = False  # the student has produced the answer
    checked: bool = False  # understanding checked after solving
    last_move: str | None = None
    moves: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["moves"] = list(self.moves)
        return data

    @classmethod
    def from_dict(cls, data: dict | None) -> "SessionState":
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["moves"] = tuple(known.get("moves", ()))
        return cls(**known)


@dataclass(frozen=True)
class Decision:
    move: Move
    hint_level: int  # the hint level this turn shows (0 when the move is no hint)
    reason: str

    @property
    def label(self) -> str:
        return f"hint_{self.hint_level}" if self.move == "hint" else self.move


def _escalate(state: SessionState, why: str) -> Decision:
    if state.hint_level >= MAX_HINT_LEVEL:
        if not state.example_given:
            return Decision("worked_example", 0, f"{why}; hints exhausted: a worked example of a different problem")
        return Decision("hint", MAX_HINT_LEVEL, f"{why}; strongest hint again")
    level = state.hint_level + 1
    return Decision("hint", level, f"{why}: hint level {level}")


def decide(state: SessionState, evaluation: Evaluation, *, has_known_answer: bool) -> Decision:
    kind = evaluation.kind
    first = state.turn == 0
    if state.solved and state.checked:
        return Decision("summarise", 0, "solved and understanding checked")
    if kind == "correct":
        return Decision("check_understanding", 0, "correct answer: check the reasoning behind it")
    if kind == "understood":
        if state.solved or state.example_given or state.last_move == "check_understanding":
            return Decision("summarise", 0, "says they understand after the key step")
        return Decision("check_understanding", 0, "says they understand: check it")
    if kind == "demand":
        return _escalate(state, "asked for the answer outright")
    if first:
        return Decision("diagnose", 0, "first turn: find out what the student knows")
    if kind in ("wrong", "stuck"):
        return _escalate(state, "failed attempt" if kind == "wrong" else "stuck")
    # question / attempt
    if not has_known_answer and kind == "attempt" and state.attempts >= 2:
        return Decision("check_understanding", 0, "several attempts on an open task: check understanding")
    if state.last_move == "ask":
        return _escalate(state, "no progress after a question")
    return Decision("ask", 0, "a guiding question towards the next step")


def advance(state: SessionState, evaluation: Evaluation, decision: Decision) -> SessionState:
    """The session state after this turn."""
    kind = evaluation.kind
    return replace(
        state,
        turn=state.turn + 1,
        hint_level=max(state.hint_level, decision.hint_level),
        failed_attempts=state.failed_attempts + (kind in ("wrong", "stuck")),
        demands=state.demands + (kind == "demand"),
        attempts=state.attempts + (kind == "attempt"),
        diagnosed=state.diagnosed or decision.move == "diagnose",
        example_given=state.example_given or decision.move == "worked_example",
        solved=state.solved or kind == "correct",
        checked=state.checked or (decision.move == "check_understanding" and (state.solved or kind == "correct")),
        last_move=decision.move,
        moves=(*state.moves, decision.label),
    )
