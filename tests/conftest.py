"""Puts the project root on sys.path so tests import `shared`, `functions` and `devhost` as the host does."""
import base64
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The app does not start without a callback signing secret (local.settings.example.json has one for devhost).
os.environ.setdefault("CALLBACK_SIGNING_SECRET", "whsec_" + base64.b64encode(b"tests-callback-signing-secret").decode())
