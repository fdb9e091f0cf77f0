"""Teacher anchors (docs/writing.md "Teacher anchors"): the offset math, the k0 evaluation, the request checks, the
Redis store (a real redis-server) and the app in-process (dev mode, identity headers as ai_service sends them)."""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import numpy as np
import pytest
import redis

from common.errors import OpenAIError
from services.writing import train_scorer as T
from services.writing.analysis import parse_request, teacher_normalised
from services.writing.schemas import AnalyzeRequest
from services.writing.scorer import FEATURES, Scorer, anchor_offset
from tests.writing.samples import ENGLISH


def test_anchor_offset_is_shrunk_mean_residual():
    assert anchor_offset(0, 0.0, 8.0) == 0.0
    assert anchor_offset(0, 0.5, 0.0) == 0.0  # no anchors, whatever the sum says
    assert anchor_offset(2, 0.4, 0.0) == pytest.approx(0.2)  # k0 = 0: the plain mean residual
    assert anchor_offset(2, 0.4, 2.0) == pytest.approx(0.1)  # as if 2 more anchors with residual 0
    assert anchor_offset(10, -1.0, 8.0) == pytest.approx(-1.0 / 18)
    assert anchor_offset(1, 5.0, 0.0) == 1.0 and anchor_offset(1, -5.0, 0.0) == -1.0  # clipped


def test_offset_shifts_holistic_and_traits_clipped():
    scorer = Scorer()
    x = scorer.features(ENGLISH)
    base = scorer.predict_vector(x, None, 5)
    up = scorer.predict_vector(x, None, 5, offset=0.1)
    assert base.anchor_offset == 0.0 and base.unanchored == pytest.approx(base.holistic)
    assert up.unanchored == pytest.approx(base.holistic)  # residuals are taken from the unshifted prediction
    assert up.holistic == pytest.approx(min(1.0, base.holistic + 0.1))
    for name, value in base.traits.items():
        assert up.traits[name] == pytest.approx(min(1.0, value + 0.1), abs=1e-9)
    top = scorer.predict_vector(x, None, 5, offset=1.0)
    assert top.holistic == 1.0 and all(v <= 1.0 for v in top.traits.values())


def test_anchored_qwk_removes_a_level_bias_and_k0_choice():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.1, 0.9, 400)
    prompt = 2  # range 1-6
    gold = T.denorm(y, prompt)
    h = y - 0.2 + rng.normal(0, 0.03, len(y))  # right ranking, level 0.2 too low
    plain = T.anchored_qwk(h, y, gold, prompt, 10, None)
    assert T.anchored_qwk(h, y, gold, prompt, 10, 0.0) > plain + 0.05
    # k0 = 0 trusts the anchors fully: best when the bias is real and the residuals are clean
    best, means = T.choose_k0({prompt: (h, y, gold)})
    assert best == 0.0 and means[0.0] > means[max(T.ANCHOR_K0)]
    # no bias, noisy residuals: shrinkage wins
    noisy = y + rng.normal(0, 0.02, len(y))
    noisy[:10] = y[:10] + rng.choice([-0.3, 0.3], 10)
    best, _ = T.choose_k0({prompt: (noisy, y, gold)})
    assert best > 0.0


def test_teacher_score_checks():
    base = {"writing_type": "essay", "content": "Some text."}
    assert teacher_normalised(AnalyzeRequest(**base)) is None
    assert teacher_normalised(AnalyzeRequest(**base, teacher_score=6, assignment_id="a1")) == 1.0
    assert teacher_normalised(AnalyzeRequest(**base, teacher_score=3.5, prompt="Write about X.")) == 0.5
    custom = {"scale": {"min": 0, "max": 20}, "criteria": [{"id": "content"}]}
    assert teacher_normalised(AnalyzeRequest(**base, teacher_score=15, assignment_id="a", rubric=custom)) == 0.75
    for bad, code in ((dict(teacher_score=4), "assignment_required"),
                      (dict(teacher_score=4, prompt="  "), "assignment_required"),
                      (dict(teacher_score=7, assignment_id="a"), "teacher_score_out_of_scale"),
                      (dict(teacher_score=0.5, assignment_id="a"), "teacher_score_out_of_scale"),
                      (dict(teacher_score=math.nan, assignment_id="a"), "teacher_score_out_of_scale"),
                      (dict(teacher_score=21, assignment_id="a", rubric=custom), "teacher_score_out_of_scale")):
        with pytest.raises(OpenAIError) as err:
            teacher_normalised(AnalyzeRequest(**base, **bad))
        assert err.value.status == 422 and err.value.code == code, bad
    for bad in (True, "5"):  # a number, not a bool or a string
        with pytest.raises(OpenAIError) as err:
            parse_request(json.dumps({**base, "teacher_score": bad, "assignment_id": "a"}).encode(),
                          max_body_bytes=10_000, max_chars=1000)
        assert err.value.status == 400 and "teacher_score" in err.value.message


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    from tests.support.processes import start_redis

    proc, url = start_redis(tmp_path_factory.mktemp("anchors-redis"))
    yield url
    proc.stop()


def test_store_records_each_text_once_atomically(redis_url):
    import redis.asyncio as aredis

    from services.writing.store import AssignmentStatsStore

    async def run():
        client = aredis.from_url(redis_url, decode_responses=True)
        store = AssignmentStatsStore(client, ttl_sec=3600)
        a = f"c:{uuid.uuid4().hex[:8]}"
        assert await store.get_all(a, len(FEATURES)) == (None, 0, 0.0)
        assert await store.add_anchor(a, "h1", 0.9) == "new"
        assert await store.add_anchor(a, "h1", 0.25) == "replaced"  # the same text anchors once; a re-score replaces
        assert await store.add_anchor(a, "h2", -0.05) == "new"
        assert (await store.get_all(a, len(FEATURES)))[1:] == (2, pytest.approx(0.2))
        stats, m, total = await store.get_all(a, len(FEATURES))
        assert stats is None and m == 2 and total == pytest.approx(0.2)  # anchors alone: no essay statistics yet
        await store.add(a, "h1", np.arange(len(FEATURES), dtype=float))
        stats, m, total = await store.get_all(a, len(FEATURES))
        assert stats.n == 1 and stats.sums[3] == 3.0 and m == 2
        raw = redis.Redis.from_url(redis_url, decode_responses=True)
        assert 0 < raw.ttl(store.key(a)) <= 3600 and 0 < raw.ttl(store.key(a) + ":anchors") <= 3600
        entries = raw.hgetall(store.key(a) + ":anchors")
        assert {k: json.loads(v)["residual"] for k, v in entries.items()} == {"h1": 0.25, "h2": -0.05}
        await client.aclose()

    asyncio.run(run())


def test_store_lists_deletes_and_clears_anchors(redis_url):
    """List (newest first, teacher_score and time kept), delete one (m and the sum follow; the last one leaves
    exact zeros), a missing id changes nothing, clear keeps the essays' statistics; entries written before times
    were kept (a plain residual) are listed and removed like the others."""
    import redis.asyncio as aredis

    from services.writing.store import AssignmentStatsStore

    async def run():
        client = aredis.from_url(redis_url, decode_responses=True)
        store = AssignmentStatsStore(client, ttl_sec=3600)
        raw = redis.Redis.from_url(redis_url, decode_responses=True)
        a = f"c:{uuid.uuid4().hex[:8]}"
        key = store.key(a)
        assert await store.list_anchors(a) == (0, 0.0, [])
        assert await store.delete_anchor(a, "nope") == (False, 0, 0.0)
        assert await store.add_anchor(a, "h1", 0.3, teacher_score=5, at=1000.0) == "new"
        assert await store.add_anchor(a, "h2", -0.1, teacher_score=2.5, at=2000.0) == "new"
        # a legacy entry (a plain residual, as recorded before times were kept), counted in m and the sum
        raw.hset(key + ":anchors", "old", "0.2")
        raw.hincrby(key, "anchor_m", 1)
        raw.hincrbyfloat(key, "anchor_sum", 0.2)
        await store.add(a, "h1", np.ones(len(FEATURES)))
        m, total, anchors = await store.list_anchors(a)
        assert m == 3 and total == pytest.approx(0.4)
        assert [x["id"] for x in anchors] == ["h2", "h1", "old"]  # newest first, no time last
        assert anchors[0] == {"id": "h2", "residual": -0.1, "recorded_at": 2000.0, "teacher_score": 2.5}
        assert anchors[2] == {"id": "old", "residual": 0.2, "recorded_at": None, "teacher_score": None}

        before = raw.hgetall(key), raw.hgetall(key + ":anchors")
        assert await store.delete_anchor(a, "h9") == (False, 3, pytest.approx(0.4))
        assert (raw.hgetall(key), raw.hgetall(key + ":anchors")) == before  # a missing id: nothing changed
        found, m, total = await store.delete_anchor(a, "old")  # legacy entry: its plain residual is subtracted
        assert found and m == 2 and total == pytest.approx(0.2)
        assert await store.add_anchor(a, "h2", 0.4, teacher_score=6, at=3000.0) == "replaced"
        assert (await store.list_anchors(a))[:2] == (2, pytest.approx(0.7))
        found, m, total = await store.delete_anchor(a, "h1")
        assert found and m == 1 and total == pytest.approx(0.4)
        assert int(raw.hget(key, "anchor_m")) == 1 and float(raw.hget(key, "anchor_sum")) == pytest.approx(0.4)
        assert await store.delete_anchor(a, "h2") == (True, 0, 0.0)
        assert raw.hget(key, "anchor_m") is None and raw.hget(key, "anchor_sum") is None  # no rounding left over
        assert not raw.exists(key + ":anchors") and int(raw.hget(key, "n")) == 1
        assert (await store.get_all(a, len(FEATURES)))[1:] == (0, 0.0)

        for i in range(3):
            await store.add_anchor(a, f"c{i}", 0.1 * i)
        assert await store.clear_anchors(a) == ["c0", "c1", "c2"]
        assert await store.list_anchors(a) == (0, 0.0, [])
        stats, m, total = await store.get_all(a, len(FEATURES))
        assert stats.n == 1 and m == 0 and total == 0.0  # the essays' statistics stay
        assert await store.clear_anchors(a) == []
        await client.aclose()

    asyncio.run(run())


def test_store_m_and_sum_stay_consistent_under_concurrency(redis_url):
    """Concurrent adds, re-scores and deletes (each one Lua script): m always equals the anchors left and the sum
    their residuals' sum; the scripts run by EVALSHA (registered once) and survive a SCRIPT FLUSH (NOSCRIPT)."""
    import redis.asyncio as aredis

    from services.writing.store import AssignmentStatsStore, parse_anchor

    async def run():
        clients = [aredis.from_url(redis_url, decode_responses=True) for _ in range(4)]
        stores = [AssignmentStatsStore(c, ttl_sec=3600) for c in clients]
        raw = redis.Redis.from_url(redis_url, decode_responses=True)
        raw.config_resetstat()
        a = f"c:{uuid.uuid4().hex[:8]}"
        rng = np.random.default_rng(1)
        ops = []
        for i in range(300):
            store = stores[i % len(stores)]
            target = f"h{int(rng.integers(0, 25))}"
            if rng.random() < 0.35:
                ops.append(store.delete_anchor(a, target))
            else:
                ops.append(store.add_anchor(a, target, float(rng.normal(0, 0.2))))
        await asyncio.gather(*ops)
        m, total, anchors = await stores[0].list_anchors(a)
        entries = raw.hgetall(stores[0].key(a) + ":anchors")
        assert m == len(anchors) == len(entries) > 0
        assert total == pytest.approx(sum(parse_anchor(k, v)["residual"] for k, v in entries.items()), abs=1e-9)
        stats = raw.info("commandstats")
        assert stats.get("cmdstat_evalsha", {}).get("calls", 0) >= 300 and "cmdstat_eval" not in stats
        raw.script_flush()  # e.g. a Redis restart: the next call loads the script again
        assert await stores[1].add_anchor(a, "after-flush", 0.5) == "new"
        assert (await stores[1].list_anchors(a))[0] == m + 1
        for c in clients:
            await c.aclose()

    asyncio.run(run())


def test_app_anchors_an_assignment(redis_url):
    """In-process (no LLM): an admin's high teacher_score raises a later essay's score; a student's teacher_score is
    403 and stores nothing; a teacher whose course membership cannot be checked gets 503; the same text anchors once
    (a re-score replaces its residual); Redis down -> scored without anchors."""
    from fastapi.testclient import TestClient

    from services.writing.app import create_app
    from services.writing.settings import WritingSettings

    # No guided service here: an admin anchors (admins need no course membership); a teacher's membership cannot
    # be checked (503, nothing stored). Teachers of the course are tested through the gateway with guided running.
    settings = WritingSettings(APP_ENV="dev", REDIS_URL=redis_url, WRITING_LLM_ENABLED=False,
                               GUIDED_SERVICE_URL="http://127.0.0.1:1")
    admin = {"x-tutorstack-role": "admin", "x-tutorstack-user-id": "a-1", "x-tutorstack-key-id": "k-a"}
    course_teacher = {"x-tutorstack-role": "teacher", "x-tutorstack-user-id": "t-1", "x-tutorstack-key-id": "k-t"}
    student = {"x-tutorstack-role": "student", "x-tutorstack-user-id": "s-1", "x-tutorstack-key-id": "k-s"}
    aid = f"anchor-{uuid.uuid4().hex[:8]}"
    key = f"writing:assignment:default:{aid}"
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    other = ENGLISH.replace("homework", "school uniforms")
    # A continuous 0-100 scale so a small shift shows. Fewer than min_essays (3) essays of the assignment are seen
    # throughout, so the unanchored prediction is the same cold-start one: the difference is the anchors' offset.
    rubric = {"scale": {"min": 0, "max": 100, "step": None}, "criteria": [{"id": "content"}, {"id": "language"}]}
    with TestClient(create_app(settings)) as client:
        def post(headers, **body):
            return client.post("/v1/writing/analyze", headers=headers, json={
                "writing_type": "essay", "content": ENGLISH, "assignment_id": aid, "rubric": rubric, **body})

        before = post(student).json()
        assert before["model"]["anchors"] == 0 and before["model"]["anchor_recorded"] is False
        denied = post(student, teacher_score=100)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "teacher_role_required"
        unchecked = post(course_teacher, teacher_score=100)
        assert unchecked.status_code == 503 and unchecked.json()["error"]["code"] == "courses_unavailable"
        assert post(admin, teacher_score=100, assignment_id=None).status_code == 422
        assert post(admin, teacher_score=101).status_code == 422
        assert r.hget(key, "anchor_m") is None and int(r.hget(key, "n")) == 1  # the refused requests stored nothing
        mistyped = post(admin, content=other, teacher_score=0).json()["model"]
        assert mistyped["anchor_recorded"] is True and mistyped["anchor_replaced"] is False
        corrected = post(admin, content=other, teacher_score=100).json()["model"]  # the teacher corrects the score
        assert corrected["anchor_recorded"] is True and corrected["anchor_replaced"] is True
        assert int(r.hget(key, "anchor_m")) == 1 and float(r.hget(key, "anchor_sum")) > 0  # 0 replaced, not added
        first = post(admin, teacher_score=100).json()  # scored with the one earlier anchor, then anchors too
        assert first["model"]["anchors"] == 1 and first["model"]["anchor_recorded"] is True
        assert int(r.hget(key, "anchor_m")) == 2 and int(r.hget(key, "n")) == 2
        after = post(student).json()
        assert after["model"]["anchors"] == 2 and after["model"]["calibration"] == "absolute"
        offset = float(r.hget(key, "anchor_sum")) / (2 + settings.anchor_k0)
        assert offset > 0 and after["model"]["anchor_offset"] == pytest.approx(offset, abs=1e-4)
        assert after["overall"]["score"] == pytest.approx(min(100.0, before["overall"]["score"] + 100 * offset), abs=0.11)
        assert after["overall"]["score"] > before["overall"]["score"]
        assert all(a["score"] >= b["score"] for a, b in zip(after["scores"], before["scores"]))
    down = WritingSettings(APP_ENV="dev", REDIS_URL="redis://127.0.0.1:1/0", WRITING_LLM_ENABLED=False)
    app = create_app(down)
    client = TestClient(app)  # no lifespan: readiness would fail; the route itself must not
    response = client.post("/v1/writing/analyze", headers=admin,
                           json={"writing_type": "essay", "content": ENGLISH, "assignment_id": aid, "teacher_score": 5})
    assert response.status_code == 200, response.text
    assert response.json()["model"]["anchors"] == 0 and response.json()["model"]["anchor_recorded"] is False


def test_app_lists_and_removes_anchors(redis_url):
    """In-process (no LLM, no guided: an admin key): analyze tells the anchor's id; GET lists the assignment's
    anchors (by assignment_id, or by prompt resolved as analyze resolves it); DELETE one changes the next essay's
    offset accordingly; a missing id is 404 and changes nothing; clearing keeps the essays' statistics; a student
    is refused; Redis down is a 503."""
    from fastapi.testclient import TestClient

    from services.writing.analysis import content_hash, resolve_assignment
    from services.writing.app import create_app
    from services.writing.schemas import AnchorDeleted, AnchorList
    from services.writing.settings import WritingSettings

    settings = WritingSettings(APP_ENV="dev", REDIS_URL=redis_url, WRITING_LLM_ENABLED=False,
                               GUIDED_SERVICE_URL="http://127.0.0.1:1")
    admin = {"x-tutorstack-role": "admin", "x-tutorstack-user-id": "a-1", "x-tutorstack-key-id": "k-a"}
    teacher = {"x-tutorstack-role": "teacher", "x-tutorstack-user-id": "t-1", "x-tutorstack-key-id": "k-t"}
    student = {"x-tutorstack-role": "student", "x-tutorstack-user-id": "s-1", "x-tutorstack-key-id": "k-s"}
    aid, course = f"list-{uuid.uuid4().hex[:8]}", "c-anchors"
    where = {"assignment_id": aid, "course_id": course}
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"writing:assignment:{course}:{aid}"
    rubric = {"scale": {"min": 0, "max": 100, "step": None}, "criteria": [{"id": "content"}, {"id": "language"}]}
    second = ENGLISH.replace("homework", "school uniforms")
    with TestClient(create_app(settings)) as client:
        def post(headers, **body):
            return client.post("/v1/writing/analyze", headers=headers, json={
                "writing_type": "essay", "content": ENGLISH, "rubric": rubric, **where, **body}).json()

        first = post(admin, teacher_score=100)["model"]
        assert first["anchor_recorded"] is True and first["anchor_id"] == content_hash(ENGLISH)
        assert post(student)["model"]["anchor_id"] is None
        low = post(admin, content=second, teacher_score=0)["model"]
        listed = client.get("/v1/writing/anchors", headers=admin, params=where)
        assert listed.status_code == 200, listed.text
        body = AnchorList.model_validate(listed.json())
        assert body.m == 2 and body.assignment == f"{course}:{aid}" and body.k0 == settings.anchor_k0
        assert [a.id for a in body.data] == [low["anchor_id"], first["anchor_id"]]  # newest first
        assert [a.teacher_score for a in body.data] == [0, 100] and body.data[0].residual < 0 < body.data[1].residual
        assert body.data[0].recorded_at.endswith("Z") and body.anchor_sum == pytest.approx(
            sum(a.residual for a in body.data))
        assert body.anchor_offset == pytest.approx(body.anchor_sum / (2 + settings.anchor_k0), abs=1e-4)

        # refused: a student (403, nothing changed), a teacher whose membership cannot be checked (503)
        for method in ("get", "delete"):
            denied = client.request(method, "/v1/writing/anchors", headers=student, params=where)
            assert denied.status_code == 403 and denied.json()["error"]["code"] == "teacher_role_required"
        denied = client.delete(f"/v1/writing/anchors/{low['anchor_id']}", headers=student, params=where)
        assert denied.status_code == 403
        assert client.get("/v1/writing/anchors", headers=teacher, params=where).json()["error"]["code"] == \
            "courses_unavailable"
        assert int(r.hget(key, "anchor_m")) == 2
        # the assignment must be named (422) with valid ids (400); an unknown one has no anchors
        assert client.get("/v1/writing/anchors", headers=admin, params={"course_id": course}).status_code == 422
        assert client.get("/v1/writing/anchors", headers=admin, params={"assignment_id": "a b"}).status_code == 400
        empty = client.get("/v1/writing/anchors", headers=admin, params={"assignment_id": "never-seen"}).json()
        assert empty["m"] == 0 and empty["data"] == [] and empty["anchor_offset"] == 0.0
        assert empty["assignment"] == "default:never-seen"

        missing = client.delete("/v1/writing/anchors/0123456789abcdef01234567", headers=admin, params=where)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "anchor_not_found"
        assert int(r.hget(key, "anchor_m")) == 2 and r.hlen(key + ":anchors") == 2
        # the mistyped 0 removed: the offset rises to the remaining anchor's residual / (1 + k0)
        removed = client.delete(f"/v1/writing/anchors/{low['anchor_id']}", headers=admin, params=where)
        assert removed.status_code == 200, removed.text
        gone = AnchorDeleted.model_validate(removed.json())
        assert gone.deleted == 1 and gone.ids == [low["anchor_id"]] and gone.m == 1
        assert gone.anchor_offset == pytest.approx(body.data[1].residual / (1 + settings.anchor_k0), abs=1e-4)
        assert gone.anchor_offset > body.anchor_offset
        after = post(student)["model"]
        assert after["anchors"] == 1 and after["anchor_offset"] == gone.anchor_offset
        cleared = client.delete("/v1/writing/anchors", headers=admin, params=where).json()
        assert cleared["deleted"] == 1 and cleared["ids"] == [first["anchor_id"]] and cleared["m"] == 0
        assert post(student)["model"]["anchors"] == 0 and int(r.hget(key, "n")) == 2  # the statistics stay

        # by prompt: the same resolution as analyze (whitespace and case normalised)
        prompt = "Should schools  ban homework?"
        by_prompt = post(admin, assignment_id=None, prompt=prompt, teacher_score=60)["model"]
        listed = client.get("/v1/writing/anchors", headers=admin,
                            params={"course_id": course, "prompt": "should schools ban HOMEWORK?"}).json()
        assert listed["assignment"] == resolve_assignment(course, None, prompt) and listed["assignment_id"] is None
        assert [a["id"] for a in listed["data"]] == [by_prompt["anchor_id"]] and listed["m"] == 1
    down = create_app(WritingSettings(APP_ENV="dev", REDIS_URL="redis://127.0.0.1:1/0", WRITING_LLM_ENABLED=False))
    response = TestClient(down).get("/v1/writing/anchors", headers=admin, params=where)
    assert response.status_code == 503 and response.json()["error"]["code"] == "anchors_unavailable"
