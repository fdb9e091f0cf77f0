"""`python -m ai_service` serves the app with uvicorn on AI_SERVICE_HOST:AI_SERVICE_PORT."""

from ai_service.app import create_app
from ai_service.settings import AIServiceSettings
from common.serve import serve


def main() -> None:
    serve("ai_service", AIServiceSettings, create_app)


if __name__ == "__main__":
    main()
