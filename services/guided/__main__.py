"""`python -m services.guided` runs the guided-learning service on GUIDED_HOST:GUIDED_PORT (default 8003)."""

import sys

import uvicorn
from pydantic import ValidationError


def main() -> None:
    from services.guided.app import create_app
    from services.guided.settings import GuidedSettings

    try:
        settings = GuidedSettings()
    except ValidationError as exc:
        sys.exit(f"guided: invalid configuration:\n{exc}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
