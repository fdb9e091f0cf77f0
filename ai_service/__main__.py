"""`python -m ai_service` serves the app with uvicorn on AI_SERVICE_HOST:AI_SERVICE_PORT."""

import sys

import uvicorn
from pydantic import ValidationError

from ai_service.app import create_app
from ai_service.settings import AIServiceSettings


def main() -> None:
    try:
        settings = AIServiceSettings()
    except ValidationError as exc:
        sys.exit(f"ai_service: invalid configuration:\n{exc}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
