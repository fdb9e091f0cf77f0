import json

import pytest

from training.cli import main
from training.dataspec import DataError, load_records, parse_tool_calls, to_chat, to_template_messages
from tests.training.conftest import SAMPLES


def write(path, lines):
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return path


GOOD = {"type": "style", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_shipped_samples_are_valid():
    for name in ("tool_sft.jsonl", "rag_sft.jsonl", "style_sft.jsonl", "benchmark.jsonl"):
        assert load_records([SAMPLES / name])


def test_problems_carry_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.jsonl", [
        GOOD,
        "{not json",
        {"type": "essay", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        "",
        {"type": "tool", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"type": "rag", "messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]},
    ])
    with pytest.raises(DataError) as info:
        load_records([bad])
    text = str(info.value)
    assert f"{bad}:2: invalid JSON" in text
    assert f"{bad}:3: 'type' is 'essay'" in text
    assert f"{bad}:5: a 'tool' record needs" in text
    assert f"{bad}:6: messages[1]: a tool message must follow" in text
    assert f"{bad}:6: the last message must be from the assistant" in text
    assert f"{bad}:1:" not in text


def test_cli_validate_fails_and_writes_nothing(tmp_path, capsys):
    bad = write(tmp_path / "bad.jsonl", [GOOD, {"type": "style", "messages": []}])
    out = tmp_path / "out.jsonl"
    assert main(["prepare", "--input", str(bad), "--output", str(out)]) == 1
    assert not out.exists()
    assert main(["prepare", "--validate", str(bad)]) == 1
    assert f"{bad}:2: 'messages' must be a non-empty list" in capsys.readouterr().err


def test_create_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT_BASE", str(tmp_path / "out"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "runs"))
    assert main(["prepare", "--create-dirs", "--create-samples", "--data-dir", str(tmp_path / "d")]) == 0
    for name in ("processed/tool_sft.jsonl", "processed/rag_sft.jsonl", "processed/style_sft.jsonl",
                 "eval/benchmark.jsonl"):
        assert (tmp_path / "d" / name).stat().st_size > 0
    assert main(["prepare", "--validate", "--data-dir", str(tmp_path / "d")]) == 0


def test_sharegpt_and_alpaca_conversion(tmp_path):
    out = tmp_path / "conv.jsonl"
    assert main(["prepare", "--input", str(SAMPLES / "sharegpt_example.jsonl"), str(SAMPLES / "alpaca_example.json"),
                 "--output", str(out)]) == 0
    records = [json.loads(l) for l in out.read_text().splitlines()]
    assert records[0]["messages"][0]["role"] == "system" and records[0]["messages"][1]["role"] == "user"
    assert records[1]["messages"][1]["tool_calls"] == [{"name": "define_word", "arguments": {"word": "concise"}}]
    assert records[1]["messages"][2]["role"] == "tool"
    alpaca = to_chat({"instruction": "Fix", "input": "teh", "output": "the"})
    assert alpaca["messages"] == [{"role": "user", "content": "Fix\n\nteh"}, {"role": "assistant", "content": "the"}]


def test_tool_calls_render_and_parse_back():
    call = {"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}
    messages = to_template_messages([{"role": "assistant", "content": "", "tool_calls": [call]}])
    assert parse_tool_calls(messages[0]["content"]) == [{"name": "f", "arguments": {"x": 1}}]
    assert parse_tool_calls('Sure: {"name": "g", "arguments": {}}') == [{"name": "g", "arguments": {}}]
    assert parse_tool_calls("no call here") == []
