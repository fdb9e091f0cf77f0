"""Where tutorstack keeps things that must outlive a git clone (venvs, models, adapters)."""

import os
from pathlib import Path


def tutorstack_home() -> Path:
    return Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))
