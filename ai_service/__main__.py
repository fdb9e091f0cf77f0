"""`python -m ai_service` serves the app with uvicorn on AI_SERVICE_HOST:AI_SERVICE_PORT."""

import gc

from ai_service.app import create_app
from ai_service.settings import AIServiceSettings
from common.serve import serve


def create_frozen_app(settings):
    """The app, with everything built at start-up moved out of the garbage collector's sight (gc.freeze):
    the collector's full passes then scan only what requests create, which keeps their pauses out of the
    latency tail under load."""
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


def main() -> None:
    serve("ai_service", AIServiceSettings, create_frozen_app)


if __name__ == "__main__":
    main()
