"""The replica balancer (ai_service/balancer.py) and the pool around it (ai_service/replica_pool.py):
configuration, vLLM metrics, adapter affinity, least-loaded, per-replica breakers, take-out and
recovery, on-demand adapter loads, discovery. Fast: no vLLM, the replicas' HTTP is mocked."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ai_service.balancer import (Balancer, BalancerConfig, EngineLoad, Replica, control_url_for, models_of,
                                 parse_control_urls, parse_local_upstreams, parse_vllm_metrics)
from ai_service.replica_pool import ReplicaPool, pool_wanted, session_key_var
from ai_service.routing import CircuitBreaker, Failure, Tier
from ai_service.settings import AIServiceSettings
from ai_service.upstreams import Served
from common.metrics import ServiceMetrics

BASE = "SmolLM2-135M-Instruct"

METRICS_0_32 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="SmolLM2-135M-Instruct"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="SmolLM2-135M-Instruct"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="SmolLM2-135M-Instruct"} 0.25
vllm:prompt_tokens_total{engine="0",model_name="SmolLM2-135M-Instruct"} 1234.0
"""
METRICS_OLD = """\
vllm:num_requests_running{model_name="m"} 1.0
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.9
"""


# --- configuration ---------------------------------------------------------------------------------

def test_local_upstreams_one_list_or_discovery():
    assert parse_local_upstreams("http://vllm:8000/v1").urls == ("http://vllm:8000/v1",)
    both = parse_local_upstreams(" http://a:8000/v1 , http://b:8000/v1/ ")
    assert both.urls == ("http://a:8000/v1", "http://b:8000/v1") and not both.discovered
    dns = parse_local_upstreams("dns+http://vllm-replicas:8000/v1")
    assert dns.discovered and dns.discovery_url == "http://vllm-replicas:8000/v1" and dns.urls == ()
    for bad in ("", "vllm:8000", "http://a/v1,http://a/v1", "dns+http://x:1/v1,http://y:1/v1", "ftp://a/v1"):
        with pytest.raises(ValueError):
            parse_local_upstreams(bad)


def test_settings_refuse_a_bad_replica_list():
    with pytest.raises(ValueError):
        AIServiceSettings(LLM_BASE_URL_LOCAL="http://a/v1,not a url")
    assert not pool_wanted(AIServiceSettings())  # one replica, no control API: the plain single-tier path
    assert pool_wanted(AIServiceSettings(LLM_BASE_URL_LOCAL="http://a:1/v1,http://b:1/v1"))
    assert pool_wanted(AIServiceSettings(LLM_BASE_URL_LOCAL="dns+http://vllm-replicas:8000/v1"))


def test_control_urls_pair_with_replicas():
    controls = parse_control_urls("http://a:8010,http://b:8010")
    assert control_url_for("http://a:8000/v1", 0, controls, False) == "http://a:8010"
    assert control_url_for("http://b:8000/v1", 1, controls, False) == "http://b:8010"
    assert control_url_for("http://c:8000/v1", 2, controls, False) == ""
    assert control_url_for("http://a:8000/v1", 0, (), False) == ""
    sidecar = parse_control_urls("http://vllm-replicas:8010")
    assert control_url_for("http://10.1.2.3:8000/v1", 0, sidecar, True) == "http://10.1.2.3:8010"
    assert control_url_for("http://[fd00::7]:8000/v1", 0, sidecar, True) == "http://[fd00::7]:8010"


# --- what the replicas report -----------------------------------------------------------------------

def test_vllm_metrics_parsed_across_versions():
    assert parse_vllm_metrics(METRICS_0_32) == EngineLoad(running=3.0, waiting=2.0, kv_cache_usage=0.25)
    assert parse_vllm_metrics(METRICS_OLD) == EngineLoad(running=1.0, waiting=0.0, kv_cache_usage=0.9)
    two_engines = 'vllm:num_requests_running{engine="0"} 1\nvllm:num_requests_running{engine="1"} 2\n'
    assert parse_vllm_metrics(two_engines).running == 3.0
    assert parse_vllm_metrics("garbage\n# only comments") == EngineLoad()


def test_models_split_base_and_adapters():
    body = {"data": [{"id": BASE, "parent": None}, {"id": "peer-v1", "parent": BASE}, {"id": "coach-v2", "parent": BASE}]}
    assert models_of(body) == (BASE, {"peer-v1", "coach-v2"})
    assert models_of({"nope": 1}) == ("", set())


# --- ranking --------------------------------------------------------------------------------------

def replica(url: str, adapters=(), running=0.0, waiting=0.0, kv=0.0, in_flight=0, up=True) -> Replica:
    r = Replica(url, adapters=set(adapters), up=up, load=EngineLoad(running, waiting, kv), scraped=True)
    r.in_flight = r.in_flight_at_scrape = in_flight
    return r


def urls(choices) -> list[str]:
    return [c.replica.url for c in choices]


def test_prefers_the_replica_that_has_the_adapter():
    a, b = replica("a", running=2), replica("b", adapters={"coach-v1"}, running=4)
    choices = Balancer().rank([a, b], "coach-v1", BASE)
    assert urls(choices) == ["b", "a"]
    assert choices[0].has_adapter and not choices[1].has_adapter
    assert choices[0].reason == "has the adapter"


def test_a_busy_adapter_holder_spills_over_to_an_idle_replica():
    a, b = replica("a"), replica("b", adapters={"coach-v1"}, running=6, waiting=2)
    choices = Balancer().rank([a, b], "coach-v1", BASE)
    assert urls(choices) == ["a", "b"] and not choices[0].has_adapter  # loaded on a as well


def test_without_affinity_only_load_counts():
    a, b = replica("a", running=1), replica("b", adapters={"coach-v1"}, running=3)
    assert urls(Balancer(BalancerConfig(adapter_affinity=False)).rank([a, b], "coach-v1", BASE)) == ["a", "b"]


def test_least_loaded_for_the_base_model():
    a, b, c = replica("a", running=4), replica("b", running=1, waiting=1), replica("c", running=1)
    assert urls(Balancer().rank([a, b, c], BASE, BASE)) == ["c", "b", "a"]
    assert urls(Balancer().rank([a, b, c], "", BASE)) == ["c", "b", "a"]


def test_own_in_flight_since_the_scrape_counts_at_once():
    a, b = replica("a", running=2, in_flight=0), replica("b", running=2, in_flight=0)
    a.in_flight = 3  # this ai_service sent three since vLLM was scraped
    assert urls(Balancer().rank([a, b], BASE, BASE)) == ["b", "a"]
    assert a.estimated_requests() == 5
    unscraped = Replica("u")
    unscraped.in_flight = 2
    assert unscraped.score() == 2


def test_a_nearly_full_kv_cache_is_a_penalty():
    a, b = replica("a", running=1, kv=0.95), replica("b", running=2, kv=0.3)
    assert urls(Balancer().rank([a, b], BASE, BASE)) == ["b", "a"]


def test_open_breaker_or_failed_probe_goes_last_but_is_still_listed():
    clock = [0.0]
    broken = replica("a")
    broken.breaker = CircuitBreaker(failure_threshold=1, reset_after_sec=30, clock=lambda: clock[0])
    broken.breaker.record_failure()
    down, fine = replica("b", up=False), replica("c", running=5)
    choices = Balancer().rank([broken, down, fine], BASE, BASE)
    assert urls(choices) == ["c", "a", "b"]
    assert choices[1].reason == "unavailable, tried last"
    clock[0] = 31  # half-open: a trial may go through, back among the first choices
    assert urls(Balancer().rank([broken, down, fine], BASE, BASE))[:2] == ["a", "c"]


def test_one_replica_is_always_tried():
    lone = replica("a", up=False)
    assert urls(Balancer().rank([lone], BASE, BASE)) == ["a"]


def test_a_session_keeps_its_replica_while_load_allows():
    replicas = [replica(u) for u in "abcd"]
    first = Balancer().rank(replicas, BASE, BASE, session="student-7")[0].replica
    for _ in range(3):
        assert Balancer().rank(replicas, BASE, BASE, session="student-7")[0].replica is first
    sessions = {Balancer().rank(replicas, BASE, BASE, session=f"s{i}")[0].replica.url for i in range(40)}
    assert len(sessions) == 4, "sessions spread over the replicas"
    first.load = EngineLoad(running=6)  # much busier than the others: the session moves
    assert Balancer().rank(replicas, BASE, BASE, session="student-7")[0].replica is not first
    off = Balancer(BalancerConfig(sticky_sessions=False))
    assert off.rank(replicas, BASE, BASE, session="student-7")[0].replica is not first


def test_a_family_name_resolves_to_the_newest_loaded_version_anywhere():
    replicas = [replica("a", adapters={"coach-v1"}), replica("b", adapters={"coach-v3", "peer-v1"})]
    balancer = Balancer()
    assert balancer.resolve("coach", BASE, replicas) == "coach-v3"
    assert balancer.resolve("coach-v1", BASE, replicas) == "coach-v1"
    assert balancer.resolve("critic", BASE, replicas) == "critic"  # loaded on demand, by family
    assert balancer.resolve(BASE, BASE, replicas) == BASE


# --- the pool: HTTP mocked ---------------------------------------------------------------------

class FakeUpstream:
    def __init__(self, url: str):
        self.base_url = url
        self.breaker = CircuitBreaker(failure_threshold=2, reset_after_sec=300)
        self.client = self

    async def aclose(self):
        pass


class FakeReplicas:
    """Answers the pool's probes (/health, /metrics, /v1/models) and llm_server's load route."""

    def __init__(self, hosts):
        self.healthy = {h: True for h in hosts}
        self.adapters = {h: {"peer-v1"} for h in hosts}
        self.running = {h: 0 for h in hosts}
        self.loads: list[tuple[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        control = host.replace(":8010", ":8000")
        if request.url.path == "/v1/adapters/load":
            name = __import__("json").loads(request.content)["name"]
            self.loads.append((control, name))
            if name.startswith("nosuch"):
                return httpx.Response(404, json={"error": {"message": "no adapter", "code": "adapter_not_found"}})
            resolved = f"{name}-v2" if "-v" not in name else name
            self.adapters[control].add(resolved)
            return httpx.Response(200, json={"name": resolved, "loaded": True, "changed": True})
        if not self.healthy[host]:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/metrics":
            return httpx.Response(200, text=f'vllm:num_requests_running{{engine="0"}} {self.running[host]}\n')
        if request.url.path == "/v1/models":
            data = [{"id": BASE, "parent": None}] + [{"id": a, "parent": BASE} for a in sorted(self.adapters[host])]
            return httpx.Response(200, json={"data": data})
        return httpx.Response(404)


def make_pool(hosts=("a:8000", "b:8000"), **env) -> tuple[ReplicaPool, FakeReplicas]:
    settings = AIServiceSettings(LLM_BASE_URL_LOCAL=",".join(f"http://{h}/v1" for h in hosts),
                                 LLM_REPLICA_CONTROL_URLS=",".join(f"http://{h.replace(':8000', ':8010')}" for h in hosts),
                                 LLM_REPLICA_POLL_SEC=3600, **env)
    pool = ReplicaPool(settings, ServiceMetrics("test"), FakeUpstream)
    fake = FakeReplicas(hosts)
    pool._http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    return pool, fake


def served_by(log: list):
    async def attempt(upstream, model):
        log.append((upstream.base_url, model))
        return Served(Tier.LOCAL, model, 200, body={"choices": []})
    return attempt


def run(coro):
    return asyncio.run(coro)


def test_pool_loads_a_missing_adapter_once_and_keeps_its_requests_there():
    async def scenario():
        pool, fake = make_pool()
        await pool.refresh()
        fake.running["a:8000"] = 3  # a is busier: the adapter goes to b
        await pool.refresh()
        log: list = []
        results = await asyncio.gather(*(pool.serve("coach", served_by(log)) for _ in range(5)))
        assert fake.loads == [("b:8000", "coach")], "one load for five concurrent requests"
        assert {r.replica for r in results} == {"b:8000"} and {m for _, m in log} == {"coach-v2"}
        await pool.refresh()
        fake.running["b:8000"] = 3
        fake.running["a:8000"] = 0
        await pool.refresh()
        again = await pool.serve("coach-v2", served_by(log))
        assert again.replica == "b:8000", "affinity beats a small load difference"
        missing = await pool.serve("nosuch-v1", served_by(log))
        assert missing.model == "nosuch-v1"  # passed on as asked: vLLM answers the client's 404
        await pool.serve("nosuch-v1", served_by(log))
        assert [n for _, n in fake.loads].count("nosuch-v1") == 1, "a miss is remembered"
        await pool.aclose()
    run(scenario())


def test_pool_fails_over_to_the_next_replica_before_the_first_byte():
    async def scenario():
        pool, fake = make_pool()
        await pool.refresh()
        tried: list = []

        async def first_one_fails(upstream, model):
            tried.append(upstream.base_url)
            if upstream.base_url == "http://a:8000/v1":
                upstream.breaker.record_failure()
                return Failure.CONNECT, "ConnectError"
            return Served(Tier.LOCAL, model, 200, body={})

        fake.running["b:8000"] = 2  # a is the first choice
        await pool.refresh()
        result = await pool.serve(BASE, first_one_fails)
        assert result.replica == "b:8000" and tried == ["http://a:8000/v1", "http://b:8000/v1"]
        assert pool.replicas["http://a:8000/v1"].failed == 1

        async def client_error(upstream, model):
            tried.append(upstream.base_url)
            return Failure.CLIENT_ERROR, "400"

        tried.clear()
        assert await pool.serve(BASE, client_error) == (Failure.CLIENT_ERROR, "400")
        assert len(tried) == 1, "a wrong request is wrong everywhere: not retried on the other replica"

        async def all_fail(upstream, model):
            return Failure.TIMEOUT, f"{upstream.base_url} hangs"

        failure, detail = await pool.serve(BASE, all_fail)
        assert failure is Failure.TIMEOUT and "a:8000" in detail and "b:8000" in detail
        assert all(r.in_flight == 0 for r in pool.replicas.values())
        await pool.aclose()
    run(scenario())


def test_breaker_is_per_replica():
    async def scenario():
        pool, fake = make_pool()
        await pool.refresh()
        a, b = pool.replicas["http://a:8000/v1"], pool.replicas["http://b:8000/v1"]
        a.breaker.record_failure()
        a.breaker.record_failure()  # threshold 2: a's breaker opens, b's stays closed
        assert a.breaker.state == "open" and b.breaker.state == "closed"
        log: list = []
        for _ in range(3):
            assert (await pool.serve(BASE, served_by(log))).replica == "b:8000"
        await pool.aclose()
    run(scenario())


def test_a_replica_that_stops_answering_is_taken_out_and_put_back_when_it_recovers():
    async def scenario():
        pool, fake = make_pool()
        await pool.refresh()
        a = pool.replicas["http://a:8000/v1"]
        fake.healthy["a:8000"] = False
        a.breaker.record_failure()
        a.breaker.record_failure()
        await pool.refresh()
        assert not a.up and a.breaker.state == "open"
        log: list = []
        assert {(await pool.serve(BASE, served_by(log))).replica for _ in range(4)} == {"b:8000"}
        assert pool.snapshot()["replicas"][0]["up"] is False
        fake.healthy["a:8000"] = True  # restarted
        await pool.refresh()
        assert a.up and a.breaker.state == "closed", "the probe puts it back, breaker closed"
        fake.running["b:8000"] = 4
        await pool.refresh()
        assert (await pool.serve(BASE, served_by(log))).replica == "a:8000"
        await pool.aclose()
    run(scenario())


def test_a_stream_stays_on_its_replica_and_is_counted_until_it_ends():
    async def scenario():
        pool, _ = make_pool()
        await pool.refresh()

        async def chunks():
            for piece in (b"data: 1\n\n", b"data: [DONE]\n\n"):
                yield piece

        async def streamed(upstream, model):
            return Served(Tier.LOCAL, model, 200, chunks=chunks())

        served = await pool.serve(BASE, streamed)
        replica = next(r for r in pool.replicas.values() if r.name == served.replica)
        assert replica.in_flight == 1, "in flight while the stream runs"
        other = await pool.serve(BASE, served_by([]))
        assert other.replica != served.replica, "the next request avoids the replica busy streaming"
        assert [c async for c in served.chunks] == [b"data: 1\n\n", b"data: [DONE]\n\n"]
        assert replica.in_flight == 0
        await pool.aclose()
    run(scenario())


def test_sessions_stick_through_the_pool():
    async def scenario():
        pool, _ = make_pool(hosts=("a:8000", "b:8000", "c:8000"))
        await pool.refresh()
        token = session_key_var.set("student-9")
        try:
            picks = {(await pool.serve(BASE, served_by([]))).replica for _ in range(5)}
        finally:
            session_key_var.reset(token)
        assert len(picks) == 1
        await pool.aclose()
    run(scenario())


def test_models_are_the_union_of_every_replica_and_fail_only_when_none_answers():
    async def scenario():
        pool, fake = make_pool()
        fake.adapters["b:8000"].add("coach-v1")
        ids = [m["id"] for m in await pool.models(fresh=True)]
        assert ids == [BASE, "peer-v1", "coach-v1"]
        fake.healthy["a:8000"] = False
        assert "coach-v1" in [m["id"] for m in await pool.models(fresh=True)]
        fake.healthy["b:8000"] = False
        with pytest.raises(RuntimeError, match="no local replica answered"):
            await pool.models(fresh=True)
        await pool.aclose()
    run(scenario())


def test_discovery_adds_and_drops_replicas(monkeypatch):
    async def scenario():
        settings = AIServiceSettings(LLM_BASE_URL_LOCAL="dns+http://vllm-replicas:8000/v1",
                                     LLM_REPLICA_CONTROL_URLS="http://vllm-replicas:8010", LLM_REPLICA_POLL_SEC=3600)
        pool = ReplicaPool(settings, ServiceMetrics("test"), FakeUpstream)
        fake = FakeReplicas(["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"])
        pool._http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
        answers = [["10.0.0.1", "10.0.0.2"]]
        loop = asyncio.get_running_loop()

        async def getaddrinfo(host, port, **_):
            assert host == "vllm-replicas"
            if answers[0] is None:
                raise OSError("temporary failure in name resolution")
            return [(2, 1, 6, "", (a, port)) for a in answers[0]]

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
        await pool.ensure_started()
        assert list(pool.replicas) == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
        assert pool.replicas["http://10.0.0.2:8000/v1"].control_url == "http://10.0.0.2:8010"
        busy = pool.replicas["http://10.0.0.1:8000/v1"]
        busy.in_flight = 1  # a stream still runs on the replica that goes away
        answers[0] = ["10.0.0.2", "10.0.0.3"]
        await pool.refresh()
        assert list(pool.replicas) == ["http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]
        assert pool._retired and pool._retired[0][0] is busy, "kept until its stream ends"
        answers[0] = None  # DNS hiccup: the known replicas stay
        await pool.refresh()
        assert len(pool.replicas) == 2
        await pool.aclose()
    run(scenario())


def test_a_burst_for_a_missing_adapter_spreads_while_the_adapter_loads():
    """In flight counts from the pick, not from after the adapter load: eight concurrent requests for
    an adapter no replica has do not all pile onto the replica that looked idle."""
    async def scenario():
        pool, fake = make_pool()
        await pool.refresh()
        log: list = []
        gate = asyncio.Event()

        async def slow(upstream, model):
            await gate.wait()
            log.append(upstream.base_url)
            return Served(Tier.LOCAL, model, 200, body={})

        tasks = [asyncio.create_task(pool.serve(f"{family}-v1", slow)) for family in ("coach", "critic") * 4]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*tasks)
        counts = {r.replica: sum(x.replica == r.replica for x in results) for r in results}
        assert set(counts) == {"a:8000", "b:8000"}, counts
        await pool.aclose()
    run(scenario())
