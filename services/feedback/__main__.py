"""`python -m services.feedback` runs the feedback service on FEEDBACK_HOST:FEEDBACK_PORT (default 8007)."""

from __future__ import annotations

import sys


def main() -> int:
    from pydantic import ValidationError

    from services.feedback.settings import FeedbackSettings

    try:
        settings = FeedbackSettings()
    except ValidationError as exc:
        sys.exit(f"feedback: invalid configuration:\n{exc}")
    import uvicorn

    from services.feedback.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
