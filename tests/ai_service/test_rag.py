"""ai_service.rag against the real graphrag app (in-process over httpx's ASGI transport)."""

import asyncio
import json

import httpx
import pytest

from ai_service.rag import (Passage, RetrievalUnavailable, attribute_sentences, build_rag_messages, cite_answer,
                            cite_completion, extract_citations,
                            last_user_text, retrieve, stream_with_citations)
from common.protocol import ChatMessage

from tests.graphrag.course import write_course


def _passages():
    return [
        Passage(1, "a.md#0", "A thesis states the main claim.", "a.md", ["Thesis"], 3, 4),
        Passage(2, "b.md#1", "Cite every paraphrase. " * 30, "b.md", ["Citations", "Paraphrase"], 10, 12),
    ]


@pytest.fixture
def graphrag_client(tmp_path):
    from graphrag.app import create_app
    from graphrag.builder import BuildOptions, build_index
    from graphrag.settings import GraphRAGSettings

    course = write_course(tmp_path / "course")
    build_index(course, tmp_path / "index", options=BuildOptions("none"), progress=None)
    app = create_app(GraphRAGSettings(graph_rag_index_path=tmp_path / "index"))
    asyncio.run(app.state.index.refresh())  # the ASGI transport does not run the lifespan
    return lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://graphrag")


def test_retrieve_returns_numbered_passages_with_citations(graphrag_client):
    async def go():
        async with graphrag_client() as client:
            return await retrieve(client, "http://graphrag", "What is a thesis statement?", top_k=3, mode="hybrid")

    passages = asyncio.run(go())
    assert [p.number for p in passages] == list(range(1, len(passages) + 1))
    assert passages[0].path == "english/thesis.md" and passages[0].start_line >= 1
    assert "thesis" in passages[0].text.lower()


def test_retrieve_raises_unavailable_when_graphrag_is_down_or_errors(graphrag_client):
    async def down():
        async with httpx.AsyncClient() as client:
            await retrieve(client, "http://127.0.0.1:9", "thesis", 3, "keyword", timeout=1)

    with pytest.raises(RetrievalUnavailable, match="not reachable"):
        asyncio.run(down())

    async def bad_request():
        async with graphrag_client() as client:
            await retrieve(client, "http://graphrag", "thesis", top_k=10_000)

    with pytest.raises(RetrievalUnavailable, match="422"):
        asyncio.run(bad_request())
    assert asyncio.run(retrieve(httpx.AsyncClient(), "http://unused", "   ", 3)) == []


def test_build_rag_messages_merges_into_the_leading_system_message():
    messages = [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": "What is a thesis?"}]
    out = build_rag_messages(messages, _passages())
    assert len(out) == 2 and out[1] == messages[1]
    system = out[0]["content"]
    assert system.startswith("You are a tutor.")
    assert "[1] (a.md — Thesis, lines 3-4)\nA thesis states the main claim." in system
    assert "[2] (b.md — Citations > Paraphrase, lines 10-12)" in system
    assert "[n]" not in system and "square brackets" in system
    assert messages[0]["content"] == "You are a tutor."  # input untouched


def test_build_rag_messages_keeps_pydantic_messages_and_adds_a_system_message():
    messages = [ChatMessage(role="user", content="hi")]
    out = build_rag_messages(messages, _passages())
    assert [type(m) for m in out] == [ChatMessage, ChatMessage]
    assert out[0].role == "system" and "[1]" in out[0].content
    assert build_rag_messages(messages, []) == messages


def test_extract_citations_keeps_valid_markers_and_removes_dangling_ones():
    answer = "A thesis is a claim [1]. Cite paraphrases [2][7]. Both matter [1, 2, 9]. Made up [4]. Year [2020]."
    text, citations = extract_citations(answer, _passages())
    assert text == "A thesis is a claim [1]. Cite paraphrases [2]. Both matter [1][2]. Made up. Year [2020]."
    assert [c["number"] for c in citations] == [1, 2]
    first = citations[0]
    assert first == {"number": 1, "id": "a.md#0", "path": "a.md", "heading_path": ["Thesis"], "start_line": 3,
                     "end_line": 4, "snippet": "A thesis states the main claim."}
    assert len(citations[1]["snippet"]) <= 241 and citations[1]["snippet"].endswith("…")


def test_extract_citations_without_passages_removes_every_marker():
    assert extract_citations("Claim [1] here [2].", []) == ("Claim here.", [])


def test_last_user_text_reads_strings_and_content_parts():
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                ChatMessage(role="user", content=[{"type": "text", "text": "second"}])]
    assert last_user_text(messages) == "second"
    assert last_user_text([]) == ""


def test_cite_completion_cleans_the_answer_and_lists_what_it_cites():
    body = {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant",
                                                             "content": "Claims need support [2]. See [7]."}}]}
    cleaned, citations, how = cite_completion(body, _passages())
    assert cleaned["choices"][0]["message"]["content"] == "Claims need support [2]. See."
    assert [c["number"] for c in citations] == [2] and citations[0]["path"] == "b.md" and how == "model"
    assert body["choices"][0]["message"]["content"].endswith("[7].")  # the input is not modified


def test_stream_with_citations_passes_chunks_through_and_adds_citations_before_done():
    def event(text):
        return ('data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
                % text).encode()

    raw = event("A thesis [") + event("1] states") + event(" a claim [9].") + b"data: [DONE]\n\n"
    pieces = [raw[i:i + 17] for i in range(0, len(raw), 17)]  # chunk boundaries fall anywhere

    async def source():
        for piece in pieces:
            yield piece

    async def collect():
        return b"".join([c async for c in stream_with_citations(source(), _passages(), {"retrieval": {"x": 1}})])

    out = asyncio.run(collect())
    assert out.startswith(raw[: raw.index(b"data: [DONE]")])  # the model's chunks unchanged and first
    lines = [line for line in out.split(b"\n") if line.startswith(b"data:")]
    assert lines[-1] == b"data: [DONE]"
    trailer = json.loads(lines[-2][5:])
    assert trailer["choices"] == [] and trailer["retrieval"] == {"x": 1}
    assert [c["number"] for c in trailer["citations"]] == [1]


def test_uncited_sentences_are_matched_to_the_passage_they_repeat():
    passages = [Passage(1, "a#0", "A thesis statement states the main claim of an essay in one sentence.", "a.md",
                        [], 3, 4),
                Passage(2, "b#0", "Paraphrase the source in your own words and cite every paraphrase.", "b.md",
                        [], 7, 9)]
    answer = ("Your thesis statement states the essay's main claim in one sentence. "
              "Always paraphrase sources in your own words! Good luck with the weather.")
    text, citations, how = cite_answer(answer, passages)
    assert text == ("Your thesis statement states the essay's main claim in one sentence [1]. "
                    "Always paraphrase sources in your own words [2]! Good luck with the weather.")
    assert [c["number"] for c in citations] == [1, 2] and how == "matched"
    # The model's own markers win: nothing is added when it cited something valid.
    assert cite_answer("A thesis states the main claim of an essay [2].", passages)[2] == "model"
    assert cite_answer("Nothing here overlaps at all.", passages) == ("Nothing here overlaps at all.", [], "none")


def test_attribution_handles_chinese_sentences():
    passages = [Passage(1, "zh#0", "议论文的论点要明确，论据要充分，论证要严密。", "zh.md", [], 1, 2)]
    marked = attribute_sentences("论点要明确，论据要充分。", passages)
    assert marked == "论点要明确，论据要充分 [1]。"
