"""common/probe.py: one readiness probe of a URL, as services/health's poller and ai_service's replica pool
use it: status + latency + error text, never an exception. Real sockets on localhost."""

from __future__ import annotations

import asyncio

import httpx

from common.probe import ProbeResult, describe_error, probe, stop_task
from tests.support.processes import free_port


async def serve(answer: bytes | None):
    """A localhost server answering every request with `answer` (raw HTTP), or never (None)."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:
            await asyncio.sleep(3600)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/readyz"


def http(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


def run(answer: bytes | None, timeout: float = 2.0, url: str | None = None) -> ProbeResult:
    async def go():
        server, served_url = await serve(answer)
        try:
            async with httpx.AsyncClient() as client:
                return await probe(client, url or served_url, timeout)
        finally:
            server.close()
    return asyncio.run(go())


def test_a_ready_service_is_ok_with_its_latency_and_body():
    result = run(http("200 OK", b'{"status": "ok"}'))
    assert result.ok and result.answered and result.status == 200 and result.error is None
    assert result.json() == {"status": "ok"} and 0 < result.latency_ms < 2000 and result.at > 0


def test_a_service_that_is_not_ready_answers_with_its_status():
    result = run(http("503 Service Unavailable", b'{"checks": {"redis": "failed: down"}}'))
    assert not result.ok and result.answered and result.status == 503 and result.error == "HTTP 503"
    assert result.json() == {"checks": {"redis": "failed: down"}}
    assert run(http("200 OK", b"not json")).json() is None


def test_nothing_listening_is_a_connection_error():
    result = run(b"", url=f"http://127.0.0.1:{free_port()}/readyz")
    assert not result.answered and result.status is None
    assert result.error == "connection refused or host unreachable"


def test_a_service_that_hangs_times_out_within_the_timeout():
    result = run(None, timeout=0.3)
    assert not result.answered and result.error == "timeout after 0.3s"
    assert 250 <= result.latency_ms < 2000


def test_errors_are_described_without_urls():
    request = httpx.Request("GET", "http://secret-host:1/x?token=abc")
    assert describe_error(httpx.Response(502, request=request)) == "HTTP 502"
    assert describe_error(httpx.ReadError("boom", request=request)) == "ReadError"
    assert "secret" not in describe_error(httpx.ConnectError("secret-host refused", request=request))


def test_stop_task_cancels_and_waits():
    async def go():
        finished = []

        async def poll_forever():
            try:
                await asyncio.sleep(3600)
            finally:
                finished.append(True)

        task = asyncio.create_task(poll_forever())
        await asyncio.sleep(0)
        await stop_task(task)
        await stop_task(None)
        return task.cancelled(), finished

    assert asyncio.run(go()) == (True, [True])
