"""Reads `local.settings.json` (or the example beside it) into the environment, as `func start` does."""
from __future__ import annotations

import json
import os
from pathlib import Path


def load_local_settings(root: Path) -> Path | None:
    """Existing environment variables win, so tests and shells can override single values."""
    for name in ("local.settings.json", "local.settings.example.json"):
        path = root / name
        if path.exists():
            values = json.loads(path.read_text()).get("Values", {})
            for key, value in values.items():
                os.environ.setdefault(key, str(value))
            return path
    return None
