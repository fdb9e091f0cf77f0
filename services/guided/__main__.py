"""`python -m services.guided` runs the guided-learning service on GUIDED_HOST:GUIDED_PORT (default 8003)."""


def main() -> None:
    from common.serve import serve
    from services.guided.app import create_app
    from services.guided.settings import GuidedSettings

    serve("guided", GuidedSettings, create_app)


if __name__ == "__main__":
    main()
