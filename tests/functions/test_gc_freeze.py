"""devhost freezes what is loaded at start and after new imports, so full collections skip it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a child process: a freeze in the test process would keep the suite's own objects from full collections.
PROBE = """
import asyncio, gc, json, sys
from devhost.gc_freeze import freeze_after_imports

async def main():
    task = asyncio.create_task(freeze_after_imports(interval=0.05))
    await asyncio.sleep(0.3)
    at_start = gc.get_freeze_count()
    assert "xml.dom.minidom" not in sys.modules
    import xml.dom.minidom  # noqa: F401 - modules loaded late, as the app loads its SDKs on first use
    await asyncio.sleep(0.3)
    after_import = gc.get_freeze_count()
    await asyncio.sleep(0.3)
    later = gc.get_freeze_count()
    garbage = [[] for _ in range(1000)]
    for a, b in zip(garbage, garbage[1:]):
        a.append(b), b.append(a)
    del garbage, a, b
    task.cancel()
    print(json.dumps({"at_start": at_start, "after_import": after_import, "later": later,
                      "collected": gc.collect()}))

asyncio.run(main())
"""


def test_objects_are_frozen_at_start_and_after_new_imports_only():
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout)
    assert counts["at_start"] > 1000
    assert counts["after_import"] > counts["at_start"]  # the new modules' objects joined
    assert counts["later"] <= counts["after_import"]  # nothing new loaded: no freeze (frozen objects may be freed)
    assert counts["collected"] >= 1000  # cycles made after the freeze are still collected
