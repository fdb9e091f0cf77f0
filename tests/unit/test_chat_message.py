"""common.protocol.ChatMessage: which messages may go without content."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.protocol import ChatMessage


@pytest.mark.parametrize("role", ["system", "developer", "user", "tool"])
def test_a_message_other_than_the_assistants_needs_content(role):
    with pytest.raises(ValidationError, match=f"a {role} message needs content"):
        ChatMessage(role=role, content=None)
    assert ChatMessage(role=role, content="").text() == ""  # empty text is content


def test_an_assistant_message_may_carry_tool_calls_instead():
    message = ChatMessage(role="assistant", content=None,
                          tool_calls=[{"id": "call_1", "function": {"name": "f", "arguments": "{}"}}])
    assert message.text() == ""
