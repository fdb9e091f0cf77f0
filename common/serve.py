"""How every service's `python -m ...` starts: read its settings (a clear exit on bad
configuration, naming the variable), then serve its app with uvicorn on the settings' host and port."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pydantic import ValidationError


def load_settings(name: str, settings_class: type):
    try:
        return settings_class()
    except ValidationError as exc:
        sys.exit(f"{name}: invalid configuration:\n{exc}")


def serve(name: str, settings, create_app: Callable) -> None:
    """`settings`: the service's settings class (read here) or an instance already read."""
    import uvicorn

    if isinstance(settings, type):
        settings = load_settings(name, settings)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)
