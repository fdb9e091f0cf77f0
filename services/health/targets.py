"""Targets: which services to poll, from HEALTH_TARGETS ("name=url,name=url")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    optional: bool = False  # down makes the platform degraded, not down


def parse_targets(text: str, optional: set[str] | frozenset[str] = frozenset()) -> list[Target]:
    targets: list[Target] = []
    seen: set[str] = set()
    for entry in (e.strip() for e in text.replace("\n", ",").split(",")):
        if not entry:
            continue
        name, sep, url = entry.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or not NAME.match(name):
            raise ValueError(f"health target {entry!r}: expected name=url with a lower-case name")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"health target {name}: {url!r} is not an http(s) URL")
        if name in seen:
            raise ValueError(f"health target {name} listed twice")
        seen.add(name)
        targets.append(Target(name, url, name in optional))
    if not targets:
        raise ValueError("HEALTH_TARGETS lists no service")
    return targets
