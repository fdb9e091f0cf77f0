import time

import pytest
from fastapi.testclient import TestClient

from graphrag.app import create_app
from graphrag.builder import BuildOptions, build_index
from graphrag.settings import MAX_TOP_K, GraphRAGSettings


def _client(index_path, **overrides):
    settings = GraphRAGSettings(graph_rag_index_path=index_path, graph_rag_reload_interval_sec=0.05, **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def client(built):
    _, index_path, _ = built
    with _client(index_path) as client:
        yield client


def test_retrieve_returns_hits_with_citations_and_why(client):
    response = client.post("/v1/retrieve", json={"query": "What makes a claim arguable?", "top_k": 3, "mode": "hybrid"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "hybrid" and body["dense"] is True and body["index_version"]
    top = body["data"][0]
    assert top["rank"] == 1 and "arguable" in top["text"]
    assert top["citation"] == {"path": "english/thesis.md", "heading_path": ["Thesis Statements", "Arguable claims"],
                               "start_line": 8, "end_line": 9}
    assert top["why"]["matched_terms"] and top["score"] > 0
    community = body["communities"][0]
    assert community["id"] == top["why"]["community"] and community["summary"].startswith("Topic:")


def test_empty_query_is_a_400_in_openai_shape(client):
    response = client.post("/v1/retrieve", json={"query": "   ", "mode": "keyword"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "query"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_top_k_over_the_maximum_is_a_422(client):
    response = client.post("/v1/retrieve", json={"query": "thesis", "top_k": MAX_TOP_K + 1})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "top_k"


def test_unknown_mode_is_a_422(client):
    assert client.post("/v1/retrieve", json={"query": "thesis", "mode": "magic"}).status_code == 422


def test_path_filter_over_http(client):
    body = client.post("/v1/retrieve", json={"query": "论点", "paths": ["chinese/"], "mode": "graph"}).json()
    assert body["data"] and {hit["citation"]["path"] for hit in body["data"]} == {"chinese/argument.md"}


def test_index_info_and_readiness(client):
    info = client.get("/v1/index").json()
    assert info["stats"]["files"] == 5 and "english/broken.pdf" in info["skipped"]
    assert client.get("/readyz").json()["status"] == "ready"
    assert client.get("/healthz").status_code == 200
    client.post("/v1/retrieve", json={"query": "thesis", "mode": "graph"})
    assert 'graphrag_retrieval_seconds_count{mode="graph"} 1.0' in client.get("/metrics").text


def test_the_index_reloads_when_it_changes_without_a_restart(built):
    course, index_path, _ = built
    with _client(index_path) as client:
        first = client.post("/v1/retrieve", json={"query": "outline", "mode": "keyword"}).json()
        assert first["data"] == []
        (course / "english" / "outline.md").write_text("# Outlines\n\nA reverse outline tests structure.\n")
        build_index(course, index_path, update=True, options=BuildOptions("hashing", index_path.parent / "vectors"),
                    progress=None)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            body = client.post("/v1/retrieve", json={"query": "outline", "mode": "keyword"}).json()
            if body["data"]:
                break
            time.sleep(0.05)
        assert body["index_version"] != first["index_version"]
        assert body["data"][0]["citation"]["path"] == "english/outline.md"


def test_without_an_index_the_service_is_up_but_not_ready(tmp_path):
    with _client(tmp_path / "missing") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        response = client.post("/v1/retrieve", json={"query": "thesis"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "index_unavailable"


def test_disabled_retrieval_answers_503(built):
    _, index_path, _ = built
    with _client(index_path, graph_rag_enabled=False) as client:
        response = client.post("/v1/retrieve", json={"query": "thesis"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "retrieval_disabled"
        assert client.get("/readyz").json()["degraded"] == ["retrieval_enabled"]


def test_an_unloadable_embedding_model_leaves_keyword_and_graph_serving(built, monkeypatch):
    import graphrag.service

    def broken(provider):
        raise ValueError("model package missing")

    monkeypatch.setattr(graphrag.service, "load_embedder", broken)
    _, index_path, _ = built
    with _client(index_path) as client:
        body = client.post("/v1/retrieve", json={"query": "plagiarism", "mode": "hybrid"}).json()
        assert body["dense"] is False
        assert body["data"][0]["citation"]["path"] == "english/citations.html"


def test_requests_during_reloads_are_all_answered(built):
    import threading

    course, index_path, _ = built
    statuses, versions = [], set()
    with _client(index_path) as client:
        def rebuild_three_times():
            for n in range(3):
                (course / "english" / f"extra{n}.md").write_text(f"# Extra {n}\n\nMore thesis advice {n}.\n")
                build_index(course, index_path, update=True,
                            options=BuildOptions("hashing", index_path.parent / "vectors"), progress=None)
                time.sleep(0.1)

        builder_thread = threading.Thread(target=rebuild_three_times)
        builder_thread.start()
        while builder_thread.is_alive():
            response = client.post("/v1/retrieve", json={"query": "thesis", "mode": "hybrid"})
            statuses.append(response.status_code)
            versions.add(response.json().get("index_version"))
        builder_thread.join()
    assert statuses and set(statuses) == {200}
    assert len(versions) >= 2
