"""`python -m services.health [serve]` runs the service on HEALTH_HOST:HEALTH_PORT (default 8005).

`python -m services.health probe URL [URL ...]` runs the poller's check once against each URL and
exits 0 when every one is ready (compose healthchecks use it, so they check what the service does).
`python -m services.health once` runs one round against HEALTH_TARGETS and prints a table.
"""

from __future__ import annotations

import asyncio
import sys


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("serve", [])
    if command == "probe" and rest:
        from services.health.poller import SERVING, probe

        async def run() -> int:
            checks = await asyncio.gather(*(probe(url) for url in rest))
            for url, check in zip(rest, checks):
                print(f"{check.status:8} {check.latency_ms or 0:7.1f} ms  {url}  {check.error or ''}".rstrip())
            return 0 if all(c.status in SERVING for c in checks) else 1

        return asyncio.run(run())
    from common.serve import load_settings, serve
    from services.health.settings import HealthSettings

    settings = load_settings('health', HealthSettings)
    if command == "serve":
        from services.health.app import create_app

        serve('health', settings, create_app)
        return 0
    if command == "once":
        from services.health.poller import Poller, overall_status

        async def round_() -> int:
            poller = Poller(settings.target_list(), timeout_sec=settings.timeout_sec)
            try:
                checks = await poller.run_once()
            finally:
                await poller.stop()
            for check in checks:
                print(f"{check.service:12} {check.status:8} {check.latency_ms or 0:7.1f} ms  {check.error or ''}")
            status = overall_status(list(poller.states.values()))
            print(f"platform: {status}")
            return 0 if status == "ok" else 1

        return asyncio.run(round_())
    print("usage: python -m services.health [serve | probe URL... | once]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
