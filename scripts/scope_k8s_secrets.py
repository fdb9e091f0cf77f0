"""Rewrite deploy/k8s/*.yaml so each container gets only the secrets its service may hold
(common/secrets.py), as secretKeyRef entries, instead of the whole tutorstack-secrets Secret.
Idempotent: run it after adding a service's manifest. tests/unit/test_k8s_secrets.py checks the result."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.secrets import SECRETS_BY_SERVICE  # noqa: E402

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
# Container name -> service name in SECRETS_BY_SERVICE.
CONTAINER_SERVICE = {"ai-service": "ai_service", "llm-server": "llm_server"}
# Every Python service but the console reaches Redis with the password-carrying URL.
REDIS_USERS = {"gateway", "ai_service", "guided", "writing", "practice", "feedback", "health"}


def secret_names(service: str) -> list[str]:
    names = sorted(SECRETS_BY_SERVICE.get(service, ()))
    return (["REDIS_URL"] if service in REDIS_USERS else []) + names


def rewrite(text: str) -> str:
    lines = text.splitlines(keepends=True)
    out, i = [], 0
    container = None
    while i < len(lines):
        line = lines[i]
        name = re.match(r"^(\s*)- name: ([a-z0-9-]+)\s*$", line)
        if name and i + 1 < len(lines) and "image:" in lines[i + 1]:
            container = name.group(2)
        if re.match(r"^\s*- secretRef: \{name: tutorstack-secrets\}\s*$", line) and container:
            indent = re.match(r"^(\s*)", line).group(1)
            base = indent[:-2]  # the envFrom key's indentation
            service = CONTAINER_SERVICE.get(container, container)
            block = [f"{base}# only the secrets {service} may hold (common/secrets.py; scripts/scope_k8s_secrets.py)\n",
                     f"{base}env:\n"]
            for key in secret_names(service):
                block.append(f"{indent}- name: {key}\n")
                block.append(f"{indent}  valueFrom:\n")
                block.append(f"{indent}    secretKeyRef: {{name: tutorstack-secrets, key: {key}, optional: true}}\n")
            i += 1
            out.extend(block)
            continue
        out.append(line)
        i += 1
    return "".join(out)


def main() -> None:
    for path in sorted(K8S.glob("*.yaml")):
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            path.write_text(new)
            print(f"scoped secrets in {path.name}")


if __name__ == "__main__":
    main()
