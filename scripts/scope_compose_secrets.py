"""Rewrite docker-compose.yml so each container holds only the secrets its service may hold
(common/secrets.py's SECRETS_BY_SERVICE, the table `make run` and Kubernetes use too).

The tutorstack services read `.env` (env_file: every setting an operator keeps there), and `.env` holds
every secret. Compose's `environment:` wins over `env_file`, so each service gets a managed block in its
`environment:` that passes its own secrets on and blanks every other one (and REDIS_PASSWORD, which only
Redis holds; REDIS_URL carries it for the services that use Redis, and is blanked for the others).
The container is created with the blanked values: the secret never reaches it, `docker inspect` included.

Idempotent: run it after adding a service or a secret; tests/unit/test_compose_secrets.py checks the result.

    python scripts/scope_compose_secrets.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.secrets import ALL_SECRETS, SECRETS_BY_SERVICE  # noqa: E402

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
# Every Python service but the console, graphrag and llm_server reaches Redis (as in scope_k8s_secrets.py).
REDIS_USERS = {"gateway", "ai_service", "guided", "writing", "practice", "feedback", "health"}
# Secrets a service cannot start without: compose refuses to start when .env leaves them empty.
REQUIRED = {"AI_GATEWAY_SHARED_TOKEN"}
BEGIN = "# >>> secrets (scripts/scope_compose_secrets.py, from common/secrets.py): its own, the others blanked"
END = "# <<< secrets"


def block(service: str, indent: str) -> list[str]:
    allowed = SECRETS_BY_SERVICE.get(service, frozenset())
    lines = [f"{indent}{BEGIN}\n"]
    for name in ALL_SECRETS:
        if name in allowed:
            value = f"${{{name}:?set it in .env}}" if name in REQUIRED else f"${{{name}:-}}"
        else:
            value = '""'
        lines.append(f"{indent}{name}: {value}\n")
    lines.append(f'{indent}REDIS_PASSWORD: ""\n')
    if service not in REDIS_USERS:
        lines.append(f'{indent}REDIS_URL: ""\n')
    lines.append(f"{indent}{END}\n")
    return lines


def rewrite(text: str) -> str:
    """The compose file with a fresh secrets block in the `environment:` of every service that reads .env."""
    lines = text.splitlines(keepends=True)
    # Drop any earlier managed block first.
    kept, skipping = [], False
    for line in lines:
        if line.strip() == BEGIN:
            skipping = True
        if not skipping:
            kept.append(line)
        if skipping and line.strip() == END:
            skipping = False
    lines = kept
    # Services (two-space keys under `services:`) that read .env.
    out: list[str] = []
    in_services = False
    service = None
    start = 0
    spans: list[tuple[str, int, int]] = []
    for i, line in enumerate(lines):
        if re.match(r"^services:\s*$", line):
            in_services = True
            continue
        if in_services and re.match(r"^\S", line) and not line.startswith("#"):
            if service:
                spans.append((service, start, i))
            in_services, service = False, None
            continue
        match = re.match(r"^  ([a-z_][a-z0-9_-]*):\s*$", line)
        if in_services and match:
            if service:
                spans.append((service, start, i))
            service, start = match.group(1), i
    if service:
        spans.append((service, start, len(lines)))
    insert_at: dict[int, list[str]] = {}
    for name, first, last in spans:
        body = lines[first:last]
        if not any(re.match(r"^    env_file:\s*\.env\s*$", line) for line in body):
            continue
        env = next((first + k for k, line in enumerate(body) if re.match(r"^    environment:\s*$", line)), None)
        if env is None:
            raise SystemExit(f"{name}: reads .env but has no `environment:` mapping to scope its secrets in")
        at = env + 1
        if at < last and lines[at].strip().startswith("<<:"):  # after a merged anchor, for reading order
            at += 1
        insert_at[at] = block(name, "      ")
    for i, line in enumerate(lines):
        if i in insert_at:
            out.extend(insert_at[i])
        out.append(line)
    return "".join(out)


def main() -> None:
    text = COMPOSE.read_text()
    new = rewrite(text)
    if new != text:
        COMPOSE.write_text(new)
        print(f"scoped secrets in {COMPOSE.name}")


if __name__ == "__main__":
    main()
