"""Retrieval-augmented chat, as pure functions (no FastAPI): fetch passages from the graphrag
service, put them numbered into the prompt, and turn the answer's [n] markers into citations.

    passages = await retrieve(client, settings.graph_rag_url, query, top_k, "hybrid")
    messages = build_rag_messages(messages, passages)
    ... answer = model output ...
    text, citations = extract_citations(answer, passages)
"""

from __future__ import annotations

import json
import re
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Literal, Sequence

import httpx

RetrievalMode = Literal["keyword", "graph", "hybrid"]
SNIPPET_CHARS = 240
PASSAGE_CHARS = 1500  # per passage in the prompt; small local models have short contexts

RAG_INSTRUCTIONS = (
    "Use the numbered course passages below to answer. Cite the passages you use with their "
    "number in square brackets, like [1] or [2][3], right after the sentence they support. "
    "Cite only the numbers listed. If the passages do not answer the question, say so and answer "
    "from general knowledge without citations."
)


# The request's `rerank` choice (None: graphrag's deployment default). The route sets it for the
# request's task and `retrieve` forwards it, so the engine between them needs no new argument.
RERANK: ContextVar[bool | None] = ContextVar("graphrag_rerank", default=None)


class RetrievalUnavailable(Exception):
    """graphrag could not be asked (down, timed out, 5xx, disabled). The chat answers without passages."""

    status = "unavailable"


class RetrievalRejected(RetrievalUnavailable):
    """graphrag refused the query (4xx): the request was wrong, graphrag is fine."""

    status = "rejected"


# graphrag takes queries of up to 4,000 characters; a pasted essay is longer, and a long query
# dilutes keyword retrieval anyway. The query is the message's question part plus its key terms.
MAX_QUERY_CHARS = 1000
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")
_STOPWORDS = frozenset("""the and for that this with you your are was were have has had not but can could would
should will what when where which who whom why how there their them they then than into from about over under
more most some such only also very just like does did doing done been being its it's i'm i've don't please
here help thanks thank essay paragraph draft text write writing wrote make made want need know think""".split())


def retrieval_query(text: str, limit: int = MAX_QUERY_CHARS) -> str:
    """What to retrieve with for a user message: the message itself when short; for a long one
    (a pasted essay with a question) its question sentences, then its most frequent key terms,
    within `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    sentences = [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]
    questions = [sentence for sentence in sentences if sentence.endswith(("?", "？"))]
    framing = questions[-3:] or [sentences[0], sentences[-1]] if sentences else []
    query_parts: list[str] = []
    for sentence in dict.fromkeys(framing):  # in order, without repeats
        if sum(len(part) + 1 for part in query_parts) + len(sentence) <= limit // 2:
            query_parts.append(sentence)
    if not query_parts and framing:
        query_parts.append(framing[-1][: limit // 2])
    query = " ".join(query_parts)
    for term in key_terms(text):
        if len(query) + len(term) + 1 > limit:
            break
        query = f"{query} {term}" if query else term
    return query[:limit]


def key_terms(text: str, most: int = 60) -> list[str]:
    """Content words of `text`, most frequent first (English words; jieba words for Chinese)."""
    counts: dict[str, int] = {}
    for word in _LATIN_WORD.findall(text):
        word = word.lower()
        if word not in _STOPWORDS:
            counts[word] = counts.get(word, 0) + 1
    runs = _CJK_RUN.findall(text)
    if runs:
        import jieba  # only for Chinese text; loading its dictionary takes a moment

        for run in runs:
            for word in jieba.cut(run):
                if len(word) >= 2:
                    counts[word] = counts.get(word, 0) + 1
    return [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:most]]


@dataclass
class Passage:
    number: int  # 1-based, the [n] the model is asked to cite
    id: str
    text: str
    path: str
    heading_path: list[str]
    start_line: int
    end_line: int
    score: float = 0.0
    why: dict[str, Any] = field(default_factory=dict)

    def citation(self) -> dict[str, Any]:
        snippet = " ".join(self.text.split())
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[:SNIPPET_CHARS].rsplit(" ", 1)[0] + "…"
        return {"number": self.number, "id": self.id, "path": self.path, "heading_path": self.heading_path,
                "start_line": self.start_line, "end_line": self.end_line, "snippet": snippet}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def retrieve(client: httpx.AsyncClient, base_url: str, query: str, top_k: int = 5,
                   mode: RetrievalMode = "hybrid", paths: list[str] | None = None,
                   timeout: float | None = None, headers: dict[str, str] | None = None,
                   rerank: bool | None = None) -> list[Passage]:
    """POST {base_url}/v1/retrieve. Raises RetrievalUnavailable when graphrag cannot answer;
    an empty query returns no passages without asking. `rerank` (default: the RERANK context
    variable, else unset) asks graphrag's cross-encoder to rescore the hybrid candidates."""
    if not query or not query.strip():
        return []
    payload: dict[str, Any] = {"query": query, "top_k": top_k, "mode": mode}
    if paths:
        payload["paths"] = paths
    rerank = RERANK.get() if rerank is None else rerank
    if rerank is not None:
        payload["rerank"] = rerank
    url = base_url.rstrip("/") + "/v1/retrieve"
    try:
        response = await client.post(url, json=payload, headers=headers,
                                     **({"timeout": timeout} if timeout is not None else {}))
    except httpx.HTTPError as exc:
        raise RetrievalUnavailable(f"graphrag not reachable at {base_url}: {type(exc).__name__}") from exc
    if 400 <= response.status_code < 500:
        raise RetrievalRejected(f"graphrag refused the query ({response.status_code}): {_error_message(response)}")
    if response.status_code >= 400:
        raise RetrievalUnavailable(f"graphrag answered {response.status_code}: {_error_message(response)}")
    passages = []
    for number, hit in enumerate(response.json().get("data", []), start=1):
        citation = hit["citation"]
        passages.append(Passage(
            number, hit["id"], hit["text"], citation["path"], list(citation["heading_path"]),
            citation["start_line"], citation["end_line"], hit.get("score", 0.0), hit.get("why", {})))
    return passages


def last_user_text(messages: Sequence[Any]) -> str:
    """The retrieval query: the text of the last user message."""
    for message in reversed(messages):
        if _get(message, "role") == "user":
            content = _get(message, "content")
            if isinstance(content, list):  # OpenAI content parts (dicts, or the protocol's TextPart)
                return " ".join(str(_get(part, "text") or "") for part in content)
            return content or ""
    return ""


def format_passages(passages: Sequence[Passage]) -> str:
    blocks = []
    for passage in passages:
        where = passage.path + (f" — {' > '.join(passage.heading_path)}" if passage.heading_path else "")
        text = passage.text if len(passage.text) <= PASSAGE_CHARS else passage.text[:PASSAGE_CHARS] + "…"
        blocks.append(f"[{passage.number}] ({where}, lines {passage.start_line}-{passage.end_line})\n{text}")
    return "\n\n".join(blocks)


def build_rag_messages(messages: Sequence[Any], passages: Sequence[Passage]) -> list[Any]:
    """Returns a new list with the numbered passages in the system message. The passages are
    appended to a leading system message when there is one (many chat templates accept only
    one system message, first), else a system message is put first. Items keep their type:
    dicts stay dicts, pydantic ChatMessage objects stay ChatMessage objects. No passages: the
    messages are returned unchanged (as a new list)."""
    messages = list(messages)
    if not passages:
        return messages
    context = f"{RAG_INSTRUCTIONS}\n\nPassages:\n\n{format_passages(passages)}"
    if messages and _get(messages[0], "role") == "system" and isinstance(_get(messages[0], "content"), str):
        merged = f"{_get(messages[0], 'content')}\n\n{context}"
        return [_with_content(messages[0], merged), *messages[1:]]
    template = messages[0] if messages else {}
    return [_new_message(template, "system", context), *messages]


# [3], [1, 2] or [1][2]: 1-3 digits only, so "[2020]" in a text is never taken for a citation.
_REMOVED = "\x00"
_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def extract_citations(answer_text: str, passages: Sequence[Passage]) -> tuple[str, list[dict[str, Any]]]:
    """Keeps the [n] markers that point at a passage, removes the dangling ones, and returns
    (clean text, citations in order of first mention). Numbers are not renumbered, so every
    [n] left in the text is the citation with "number": n."""
    by_number = {p.number: p for p in passages}
    cited: list[int] = []

    def replace(match: re.Match) -> str:
        numbers = [int(n) for n in re.split(r"\s*,\s*", match.group(1))]
        kept = [n for n in dict.fromkeys(numbers) if n in by_number]
        for n in kept:
            if n not in cited:
                cited.append(n)
        return "".join(f"[{n}]" for n in kept) or _REMOVED

    text = _MARKER.sub(replace, answer_text or "")
    text = re.sub(rf"[ \t]*{_REMOVED}", "", text).strip()  # "claim [9]." -> "claim."
    return text, [by_number[n].citation() for n in cited]


# Small local models often use the passages without writing [n]. Then each sentence is matched to
# the passage that shares most of its content words (post-hoc attribution), so the answer still
# points at its sources; a sentence sharing less than this share with every passage stays uncited.
MIN_SHARED_WORDS = 0.5
_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")
_STOP = frozenset("a an and are as at be by for from has have in is it its of on or that the this to was "
                  "were will with which who what when where how why should can could would your you their "
                  "they them it's not but so if than then also more most such".split())


def content_words(text: str) -> set[str]:
    words = set()
    for token in re.findall(r"\w+", text.lower()):
        if re.search(r"[\u4e00-\u9fff]", token):  # Chinese: character bigrams stand in for words
            words.update(token[i:i + 2] for i in range(max(1, len(token) - 1)))
        elif token not in _STOP and len(token) > 2:
            words.add(token)
    return words


def attribute_sentences(answer_text: str, passages: Sequence[Passage]) -> str:
    """Append [n] to each sentence whose content words are mostly found in passage n."""
    if not passages:
        return answer_text
    passage_words = [(p.number, content_words(p.text)) for p in passages]

    def mark(match: re.Match) -> str:
        sentence = match.group(0)
        words = content_words(sentence)
        if len(words) < 3:
            return sentence
        number, shared = max(((n, len(words & pw)) for n, pw in passage_words), key=lambda item: item[1])
        if shared / len(words) < MIN_SHARED_WORDS:
            return sentence
        body = sentence.rstrip()
        trail = sentence[len(body):]
        stripped = body.rstrip(".!?。！？")
        return f"{stripped} [{number}]{body[len(stripped):]}{trail}"

    return _SENTENCE.sub(mark, answer_text)


def cite_answer(answer_text: str, passages: Sequence[Passage]) -> tuple[str, list[dict[str, Any]], str]:
    """(text, citations, how): the model's own [n] markers when it wrote valid ones ("model"),
    else sentences matched to passages ("matched"), else none ("none")."""
    text, citations = extract_citations(answer_text, passages)
    if citations:
        return text, citations, "model"
    text, citations = extract_citations(attribute_sentences(text, passages), passages)
    return text, citations, "matched" if citations else "none"


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except Exception:
        return response.text[:200]


def _get(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, dict) else getattr(message, key, None)


def _with_content(message: Any, content: str) -> Any:
    if isinstance(message, dict):
        return {**message, "content": content}
    return message.model_copy(update={"content": content})


def _new_message(template: Any, role: str, content: str) -> Any:
    if isinstance(template, dict) or not hasattr(template, "model_copy"):
        return {"role": role, "content": content}
    return type(template)(role=role, content=content)


# ---------------------------------------------------------------- answers: plain and streamed

def cite_completion(body: dict[str, Any], passages: Sequence[Passage]
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """A chat.completion body whose first choice carries valid [n] markers only (see cite_answer),
    its citations and how they were found."""
    choices = body.get("choices") or []
    if not choices:
        return body, [], "none"
    message = choices[0].get("message") or {}
    text, citations, how = cite_answer(message.get("content") or "", passages)
    first = {**choices[0], "message": {**message, "content": text}}
    return {**body, "choices": [first, *choices[1:]]}, citations, how


async def stream_with_citations(chunks: AsyncIterator[bytes], passages: Sequence[Passage],
                                extra: dict[str, Any]) -> AsyncIterator[bytes]:
    """Pass SSE chunks through as they come; before `data: [DONE]` add one chunk carrying the
    `citations` of the whole answer (and `extra`). Text already sent cannot be edited, so a
    streamed answer keeps any dangling marker, and citations found by matching sentences
    ("citations_from": "matched") have no marker in the streamed text."""
    pending = b""
    answer: list[str] = []

    def trailer() -> bytes:
        _, citations, how = cite_answer("".join(answer), passages)
        payload = {"object": "chat.completion.chunk", "choices": [], **extra, "citations": citations,
                   "citations_from": how}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = []
        for line in lines:
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if data == b"[DONE]":
                    out.append(trailer())
                elif data:
                    answer.append(_delta_text(data))
            out.append(line + b"\n")
        if out:
            yield b"".join(out)
    if pending:
        yield pending


def _delta_text(data: bytes) -> str:
    try:
        event = json.loads(data)
        return "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices") or [])
    except (ValueError, AttributeError):
        return ""
