"""`python -m services.practice [serve]` runs the service on PRACTICE_HOST:PRACTICE_PORT (default 8006).

`python -m services.practice engine rules|llm|clear` sets the runtime engine override in Redis: `rules`
switches every trainee to the rules engine at once (no restart), `clear` returns to the configured engine.
`python -m services.practice train ...` is `python -m services.practice.train_intents ...`.
"""

from __future__ import annotations

import asyncio
import sys


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("serve", [])
    if command == "train":
        from services.practice.train_intents import main as train_main

        return train_main(rest)
    from common.serve import load_settings, serve
    from services.practice.settings import PracticeSettings

    settings = load_settings('practice', PracticeSettings)
    if command == "serve":
        from services.practice.app import create_app

        serve('practice', settings, create_app)
        return 0
    if command == "engine" and rest and rest[0] in ("rules", "llm", "clear", "show"):
        from services.practice.store import PracticeStore

        async def run() -> str | None:
            store = PracticeStore.from_url(settings.redis_url, override_key=settings.engine_override_key)
            try:
                if rest[0] != "show":
                    await store.set_engine_override(None if rest[0] == "clear" else rest[0])
                return await store.engine_override()
            finally:
                await store.aclose()

        value = asyncio.run(run())
        print(f"engine override: {value or 'none'} (configured PRACTICE_ENGINE={settings.engine})")
        return 0
    print("usage: python -m services.practice [serve | engine rules|llm|clear|show | train ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
