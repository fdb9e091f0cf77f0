"""`python -m ai_service` serves the app with uvicorn on AI_SERVICE_HOST:AI_SERVICE_PORT
(AI_SERVICE_WORKERS processes)."""

import gc

from ai_service.app import create_app
from ai_service.settings import AIServiceSettings
from common.serve import load_settings, serve


def create_frozen_app(settings):
    """The app, with everything built at start-up moved out of the garbage collector's sight (gc.freeze):
    the collector's full passes then scan only what requests create, which keeps their pauses out of the
    latency tail under load."""
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


def create_frozen_app_from_env():
    """The import-string factory uvicorn calls in each worker when AI_SERVICE_WORKERS > 1."""
    return create_frozen_app(AIServiceSettings())


def main() -> None:
    settings = load_settings("ai_service", AIServiceSettings)
    if settings.workers > 1:
        import uvicorn

        uvicorn.run("ai_service.__main__:create_frozen_app_from_env", factory=True, workers=settings.workers,
                    host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=5)
        return
    serve("ai_service", settings, create_frozen_app)


if __name__ == "__main__":
    main()
