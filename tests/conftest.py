"""Puts the project root on sys.path so tests import `shared`, `functions` and `devhost` as the host does."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
