"""The learner and course id rule that the services agree on (docs/learner-profile.md): these ids go into
Redis keys, so they hold no separator or glob character, and one user's request can never name another's key."""

from __future__ import annotations

import re

ID_CHARS = r"[A-Za-z0-9_.@\-]{1,128}"  # unanchored, for a capture inside a key pattern
ID_PATTERN = rf"^{ID_CHARS}$"
ID_RE = re.compile(ID_PATTERN)
