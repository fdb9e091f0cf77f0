"""`python -m services.console` serves the web console on CONSOLE_HOST:CONSOLE_PORT (default 8090)."""

from __future__ import annotations

import sys


def main() -> int:
    from pydantic import ValidationError

    from services.console.settings import ConsoleSettings

    try:
        settings = ConsoleSettings()
    except ValidationError as exc:
        sys.exit(f"console: invalid configuration:\n{exc}")
    import uvicorn

    from services.console.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
