"""The training data spec: one JSON chat record per line, plus converters from ShareGPT and Alpaca.

Pure Python (no torch), so validation is instant and testable. A record looks like

    {"id": "tool-001", "type": "tool", "meta": {...},
     "messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {...}}]},
                  {"role": "tool", "name": "f", "content": "{...}"},
                  {"role": "assistant", "content": "..."}]}

Full description in training/README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

ROLES = ("system", "user", "assistant", "tool")
RECORD_TYPES = ("tool", "rag", "style")
# Tool calls are rendered into the assistant text with these tags, so any chat template
# (SmolLM2's has no tool support) trains them and evaluation can parse them back.
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "function_call": "assistant", "observation": "tool",
                  "tool": "tool", "function": "tool"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line of one file; str() is the `file:line: what is wrong` form."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class DataError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


# ---------------------------------------------------------------- reading


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any | None, str | None]]:
    """Yield (line number, parsed object or None, parse error or None); blank lines skipped."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON: {exc.msg} (column {exc.colno})"


def read_records(path: str | Path) -> Iterator[tuple[int, Any | None, str | None]]:
    """Like read_jsonl, but a `.json` file holding a list (Alpaca's usual shape) is accepted too."""
    path = Path(path)
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
            return
        items = data if isinstance(data, list) else [data]
        for index, item in enumerate(items, start=1):
            yield index, item, None  # "line" is the item's position for .json arrays
        return
    yield from read_jsonl(path)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write atomically (temp file + rename) so a failed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


# ---------------------------------------------------------------- conversion


def detect_format(obj: Any) -> str:
    if isinstance(obj, dict):
        if "messages" in obj:
            return "chat"
        if "conversations" in obj:
            return "sharegpt"
        if "instruction" in obj and "output" in obj:
            return "alpaca"
        if "prompt" in obj and "response" in obj:
            return "pair"
    return "unknown"


def from_sharegpt(obj: dict) -> dict:
    messages = []
    if obj.get("system"):
        messages.append({"role": "system", "content": obj["system"]})
    for turn in obj["conversations"]:
        if not isinstance(turn, dict) or turn.get("from") not in SHAREGPT_ROLES:
            raise ValueError(f"ShareGPT turn with unknown 'from': {turn.get('from') if isinstance(turn, dict) else turn!r}")
        role = SHAREGPT_ROLES[turn["from"]]
        value = turn.get("value", "")
        if turn["from"] == "function_call":  # LLaMA-Factory style: value is the call's JSON
            call = json.loads(value) if isinstance(value, str) else value
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:
            messages.append({"role": role, "content": value})
    return _with_common_fields(obj, messages, skip=("conversations", "system"))


def from_alpaca(obj: dict) -> dict:
    prompt = obj["instruction"] if not obj.get("input") else f"{obj['instruction']}\n\n{obj['input']}"
    messages = [{"role": "system", "content": obj["system"]}] if obj.get("system") else []
    for old_prompt, old_answer in obj.get("history") or []:
        messages += [{"role": "user", "content": old_prompt}, {"role": "assistant", "content": old_answer}]
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": obj["output"]}]
    return _with_common_fields(obj, messages, skip=("instruction", "input", "output", "system", "history"))


def from_pair(obj: dict) -> dict:
    """Distilled prompt/response pairs back to chat (prompt may be a string or a message list)."""
    prompt = obj["prompt"]
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    response = obj["response"]
    messages.append(response if isinstance(response, dict) else {"role": "assistant", "content": response})
    return _with_common_fields(obj, messages, skip=("prompt", "response"))


def _with_common_fields(obj: dict, messages: list, skip: tuple) -> dict:
    record = {"messages": messages}
    for key, value in obj.items():
        if key not in skip:
            record[key] = value
    return record


def to_chat(obj: Any, default_type: str | None = None) -> dict:
    """Any supported input shape -> a chat record (not yet validated)."""
    kind = detect_format(obj)
    converters = {"chat": dict, "sharegpt": from_sharegpt, "alpaca": from_alpaca, "pair": from_pair}
    if kind not in converters:
        raise ValueError("unrecognised record: expected 'messages', 'conversations' (ShareGPT), "
                         "'instruction'+'output' (Alpaca) or 'prompt'+'response'")
    record = converters[kind](obj)
    if default_type and "type" not in record:
        record["type"] = default_type
    return record


# ---------------------------------------------------------------- validation


def normalize_tool_call(call: Any) -> dict:
    """Accept {"name", "arguments"} or OpenAI's {"type": "function", "function": {...}}; arguments as dict."""
    if not isinstance(call, dict):
        raise ValueError("a tool call must be an object")
    if "function" in call and isinstance(call["function"], dict):
        call = call["function"]
    name, arguments = call.get("name"), call.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise ValueError("a tool call needs a non-empty string 'name'")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"tool call '{name}' has arguments that are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call '{name}' arguments must be a JSON object")
    return {"name": name, "arguments": arguments}


def record_problems(record: Any) -> list[str]:
    """Everything wrong with one chat record, as messages (empty list: valid)."""
    if not isinstance(record, dict):
        return ["record must be a JSON object"]
    problems: list[str] = []
    record_type = record.get("type")
    if record_type is None:
        problems.append(f"missing 'type' (one of {', '.join(RECORD_TYPES)})")
    elif record_type not in RECORD_TYPES:
        problems.append(f"'type' is {record_type!r}, expected one of {', '.join(RECORD_TYPES)}")
    if "meta" in record and not isinstance(record["meta"], dict):
        problems.append("'meta' must be an object")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + ["'messages' must be a non-empty list"]

    has_tool_call = False
    pending_tool_results = False
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(f"{where} must be an object")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append(f"{where}.role is {role!r}, expected one of {', '.join(ROLES)}")
            continue
        if role == "system" and index != 0:
            problems.append(f"{where}: a system message may only come first")
        if not isinstance(content, str):
            problems.append(f"{where}.content must be a string")
            content = ""
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant":
                problems.append(f"{where}: only assistant messages may carry tool_calls")
            elif not isinstance(calls, list) or not calls:
                problems.append(f"{where}.tool_calls must be a non-empty list")
            else:
                for call in calls:
                    try:
                        normalize_tool_call(call)
                    except ValueError as exc:
                        problems.append(f"{where}.tool_calls: {exc}")
                has_tool_call = True
                pending_tool_results = True
        if role == "assistant" and TOOL_CALL_OPEN in content:
            calls = calls or True  # a call already rendered as text (distilled pairs)
            pending_tool_results = True
        if role == "tool" and not pending_tool_results:
            problems.append(f"{where}: a tool message must follow an assistant message with tool_calls")
        if role not in ("tool",) and not calls:
            pending_tool_results = False  # tool results may only answer the calls just made
        if role in ("user", "assistant") and not content.strip() and not calls:
            problems.append(f"{where}: empty {role} content")
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "user" not in roles:
        problems.append("no user message")
    if roles and roles[-1] != "assistant":
        problems.append(f"the last message must be from the assistant, not {roles[-1]!r}")
    rendered_call = any(isinstance(m, dict) and m.get("role") == "assistant" and TOOL_CALL_OPEN in str(m.get("content"))
                        for m in messages)  # distilled pairs carry their calls as rendered text
    if record_type == "tool" and not (has_tool_call or rendered_call):
        problems.append("a 'tool' record needs at least one assistant message with tool_calls")
    return problems


def load_records(paths: Iterable[str | Path], default_type: str | None = None) -> list[dict]:
    """Read, convert and validate files; raise DataError listing every problem (file:line)."""
    records, problems = [], []
    for path in paths:
        for line, obj, error in read_records(path):
            if error:
                problems.append(Problem(str(path), line, error))
                continue
            try:
                record = to_chat(obj, default_type)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
                problems.append(Problem(str(path), line, str(exc)))
                continue
            found = record_problems(record)
            problems += [Problem(str(path), line, message) for message in found]
            if not found:
                records.append(normalize_record(record))
    if problems:
        raise DataError(problems)
    return records


def normalize_record(record: dict) -> dict:
    """Canonical form of a valid record: tool calls as {"name", "arguments"} dicts."""
    messages = []
    for message in record["messages"]:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [normalize_tool_call(call) for call in message["tool_calls"]]
        messages.append(message)
    return {**record, "messages": messages}


# ---------------------------------------------------------------- views used by training and eval


def render_tool_calls(calls: list[dict]) -> str:
    return "".join(f"{TOOL_CALL_OPEN}{json.dumps(normalize_tool_call(c), ensure_ascii=False, sort_keys=True)}"
                   f"{TOOL_CALL_CLOSE}" for c in calls)


def to_template_messages(messages: list[dict]) -> list[dict]:
    """Messages with only role/content, tool calls rendered as tagged JSON in the content."""
    out = []
    for message in messages:
        content = message.get("content") or ""
        if message.get("tool_calls"):
            content = (content + "\n" if content else "") + render_tool_calls(message["tool_calls"])
        out.append({"role": message["role"], "content": content})
    return out


def split_prompt_reference(record: dict) -> tuple[list[dict], dict]:
    """Prompt = every message before the last assistant turn; reference = that turn."""
    messages = record["messages"]
    return messages[:-1], messages[-1]


def parse_tool_calls(text: str) -> list[dict]:
    """Tool calls found in generated text: tagged JSON first, else one bare JSON object with a name."""
    calls = []
    rest = text
    while TOOL_CALL_OPEN in rest:
        _, _, after = rest.partition(TOOL_CALL_OPEN)
        body, _, rest = after.partition(TOOL_CALL_CLOSE)
        try:
            calls.append(normalize_tool_call(json.loads(body)))
        except (ValueError, json.JSONDecodeError):
            continue
    if not calls:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                calls.append(normalize_tool_call(json.loads(text[start:end + 1])))
            except (ValueError, json.JSONDecodeError):
                pass
    return calls
