"""The console in real headless Chromium against the real stack: login, streaming chat, arena vote,
the leaderboard changing, promote and roll back an adapter, a bad key's error. Screenshots of each page
go to outputs/test-artifacts/console/."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.console.conftest import shot

pytestmark = pytest.mark.integration


def login(page, console_url, key):
    page.goto(console_url)
    page.fill("#api-key", key)
    page.click("#login-button")


def test_bad_key_gets_the_login_error(page, console_url):
    login(page, console_url, "not-a-real-key")
    page.wait_for_selector("#login-error:has-text('not valid')")
    assert page.is_hidden("#nav")
    shot(page, "login-error")


def test_student_login_and_streaming_chat(page, console_url, stack):
    key = stack.key_for("console-student", role="student", user_id="stu-1")
    login(page, console_url, key)
    page.wait_for_selector("#view-chat:not([hidden])")
    assert "stu-1 (student)" in page.inner_text("#who")
    # a student sees no operator pages
    assert page.is_hidden("#nav a[href='#adapters']") and page.is_hidden("#nav a[href='#learners']")
    page.select_option("#chat-mode", "tutor")
    page.fill("#chat-max", "24")
    page.fill("#chat-input", "How do I write a strong thesis?")
    # Record every text the answer box shows, inside the browser: polling from here can miss the pieces
    # when a fast answer lands between two polls (a CI run saw only the finished text).
    page.evaluate(
        """() => {
            window.__answerLengths = [];
            new MutationObserver((records) => {
                for (const r of records) for (const n of r.addedNodes)
                    if (n.nodeType === Node.TEXT_NODE && n.parentElement
                        && n.parentElement.matches('.msg.assistant .text')) window.__answerLengths.push(n.data.length);
            }).observe(document.querySelector('#chat-log'), { childList: true, subtree: true });
        }"""
    )
    page.click("#chat-send")
    page.wait_for_selector(".msg.assistant[data-done='1']", timeout=120_000)
    final = page.locator(".msg.assistant .text").last.text_content()
    lengths = page.evaluate("() => window.__answerLengths")
    assert final and lengths[-1] == len(final)
    # streamed, not all at once: the box grew through at least one partial answer before the final one
    assert len(set(lengths)) >= 2 and lengths == sorted(lengths), f"the answer did not arrive in pieces: {lengths}"
    page.locator(".msg.assistant .up").last.click()
    page.wait_for_selector(".thanks:has-text('thanks')")
    shot(page, "chat")


def test_arena_vote_changes_the_leaderboard(page, console_url, stack):
    key = stack.key_for("console-voter", role="student", user_id="stu-2")
    login(page, console_url, key)
    page.wait_for_selector("#nav:not([hidden])")
    page.goto(f"{console_url}/#leaderboard")
    page.wait_for_selector("#leaderboard :is(table, p)")
    before = page.locator("table.board[data-mode='peer'] td.games").all_inner_texts()
    page.goto(f"{console_url}/#arena")
    page.fill("#arena-mode", "peer")
    page.fill("#arena-prompt", "Is my topic sentence clear: 'Dogs are good.'")
    page.click("#arena-ask")
    page.wait_for_selector("#arena-result:not([hidden])", timeout=180_000)
    assert page.inner_text("#arena-a").strip() or page.inner_text("#arena-b").strip()
    page.fill("#arena-comment", "A is kinder")
    page.click(".votes button[data-vote='a']")
    page.wait_for_selector("#arena-reveal:has-text('A was')")
    shot(page, "arena")
    page.goto(f"{console_url}/#leaderboard")
    page.wait_for_selector("table.board[data-mode='peer']")
    after = page.locator("table.board[data-mode='peer'] td.games").all_inner_texts()
    games = lambda cells: sum(int(c.split("/")[1]) for c in cells)  # noqa: E731
    assert games(after) == games(before) + 2  # one more comparison, counted for both models
    assert page.locator("table.board[data-mode='peer'] .bar .ci").count() >= 2  # CI bars drawn
    shot(page, "leaderboard")


def test_promote_and_roll_back(page, console_url, stack, feedback):
    # a second version of the peer family to work with (a copy of the sample adapter, published as peer-vN)
    from training.publish import publish
    import os
    from tests.support.stack import LLM_SERVER_TOKEN

    os.environ.setdefault("LLM_SERVER_API_TOKEN", LLM_SERVER_TOKEN)
    published = publish(str(stack.adapters_dir / "peer-v1"), "peer", directory=str(stack.adapters_dir),
                        url=stack.control_url)
    name = published["name"]
    key = stack.key_for("console-admin", role="admin", user_id="ops-1")
    login(page, console_url, key)
    page.wait_for_selector("#nav a[href='#adapters']:not([hidden])")
    page.goto(f"{console_url}/#adapters")
    page.wait_for_selector(f"#adapters tr[data-adapter='{name}']")
    page.fill("#ab-mode", "peer")
    page.fill("#ab-candidate", name)
    page.fill("#ab-control", "peer-v1")
    page.fill("#ab-percent", "50")
    page.click("#ab-start")
    page.wait_for_selector(f"#ab-state:has-text('{name} (candidate) at 50%')")
    shot(page, "adapters-ab")
    page.click("#ab-promote")
    page.wait_for_selector(f"#adapters-msg:has-text('promote: now serving {name}')")
    page.wait_for_selector("#adapters tr[data-adapter='peer-v1'] td.loaded:has-text('no')")
    page.wait_for_selector("#ab-state:has-text('No A/B split')")
    # load peer-v1 back from the table, then roll the promoted version back: peer-v1 serves again
    page.click("#adapters tr[data-adapter='peer-v1'] button.op")
    page.wait_for_selector("#adapters tr[data-adapter='peer-v1'] td.loaded:has-text('yes')")
    page.click("#ab-rollback")
    page.wait_for_selector("#adapters-msg:has-text('rollback: now serving peer-v1')")
    assert not (stack.adapters_dir / name).exists()
    shot(page, "adapters")
    listing = httpx.get(f"{stack.gateway_url}/v1/adapters", headers={"authorization": f"Bearer {key}"}, timeout=30)
    loaded = {a["name"] for a in listing.json()["data"] if a["loaded"]}
    assert "peer-v1" in loaded and name not in loaded


def test_operator_pages_render(page, console_url, stack):
    key = stack.key_for("console-admin2", role="admin", user_id="ops-2")
    login(page, console_url, key)
    page.wait_for_selector("#nav:not([hidden])")
    page.goto(f"{console_url}/#health")
    page.wait_for_selector("#health-overall:not(:empty)")
    shot(page, "health")
    page.goto(f"{console_url}/#metrics")
    page.wait_for_selector("#metrics-charts svg.chart, #metrics-charts p")
    time.sleep(2.5)
    page.click("#nav a[href='#chat']")
    page.goto(f"{console_url}/#metrics")
    page.wait_for_selector("#metrics-charts svg.chart", timeout=30_000)
    shot(page, "metrics")
    page.goto(f"{console_url}/#writing")
    page.fill("#writing-input", "Their going to the library. It was very very good.")
    page.click("#writing-analyze")
    page.wait_for_function("document.querySelector('#writing-status').textContent !== 'Analyzing…'", timeout=120_000)
    shot(page, "writing")
    page.goto(f"{console_url}/#comments")
    page.wait_for_selector("#comments tbody tr")
    shot(page, "comments")


def test_safety_page_lists_one_event_per_decision(page, console_url, stack):
    """An insult with an e-mail address is one moderation decision: the page shows the deciding category
    and action, the other flagged category beside it, and never the address itself."""
    course = f"console-{int(time.time())}"
    student = stack.key_for("console-safety-student", role="student", user_id="stu-9")
    response = httpx.post(f"{stack.gateway_url}/v1/chat/completions", timeout=120,
                          headers={"authorization": f"Bearer {student}"},
                          json={"model": "", "max_tokens": 8, "metadata": {"course_id": course}, "messages": [
                              {"role": "user", "content": "you're a stupid useless loser, mail me at kid9@example.com"}]})
    assert response.status_code == 200, response.text
    login(page, console_url, stack.key_for("console-admin3", role="admin", user_id="ops-3"))
    page.wait_for_selector("#nav:not([hidden])")
    page.goto(f"{console_url}/#safety")
    page.fill("#safety-course", course)
    page.click("#safety-form button")
    row = page.locator("#safety-events tbody tr", has_text="[email]").first
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    admin = stack.key_for("console-admin3", role="admin", user_id="ops-3")
    [event] = httpx.get(f"{stack.gateway_url}/v1/safety/events", params={"course": course}, timeout=30,
                        headers={"authorization": f"Bearer {admin}"}).json()["data"]
    other = ({"harassment", "pii"} - {event["category"]}).pop()
    assert cells[1].startswith(f"{event['category']} (also {other} "), cells
    assert cells[2] == event["action"] and cells[5] == "stu-9"
    assert "kid9@example.com" not in row.inner_text()
    shot(page, "safety")
