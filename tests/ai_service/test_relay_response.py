"""ai_service's streamed answers (RelayResponse): every chunk goes out; a client that goes away mid-stream
cancels the relay, so the upstream stream is closed (the model server stops generating for nobody); any
other cancellation still propagates."""

import asyncio

import pytest

from ai_service.transport import RelayResponse

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "method": "POST", "headers": []}


def test_every_chunk_is_sent_and_the_body_ends():
    async def chunks():
        for i in range(3):
            yield f"data: {i}\n\n".encode()

    async def go():
        sent = []
        done = asyncio.Event()

        async def receive():
            await done.wait()  # uvicorn answers only once the response is complete
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await RelayResponse(chunks(), media_type="text/event-stream")(SCOPE, receive, send)
        return sent

    sent = asyncio.run(go())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_client_that_goes_away_closes_the_upstream_stream():
    closed = asyncio.Event()

    async def chunks():
        try:
            yield b"data: first\n\n"
            await asyncio.sleep(3600)  # the upstream is still generating
            yield b"data: never\n\n"
        finally:
            closed.set()  # _relay closes the upstream connection here

    async def go():
        first_sent = asyncio.Event()

        async def receive():
            await first_sent.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message.get("body"):
                first_sent.set()

        await asyncio.wait_for(RelayResponse(chunks())(SCOPE, receive, send), 5)
        return closed.is_set()

    assert asyncio.run(go()) is True


def test_another_cancellation_is_not_swallowed():
    async def chunks():
        yield b"data: first\n\n"
        await asyncio.sleep(3600)
        yield b"x"

    async def go():
        async def receive():
            await asyncio.sleep(3600)

        async def send(message):
            pass

        task = asyncio.create_task(RelayResponse(chunks())(SCOPE, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
