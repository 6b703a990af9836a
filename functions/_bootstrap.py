"""Runs once per worker when the app loads: validated settings (a bad one stops the start), logging, and the
Durable SDK's timestamp parser."""
import importlib

from shared.clock import parse_iso
from shared.config import get_settings
from shared.observability import configure_logging

settings = get_settings()
configure_logging(settings.log_level, settings.secret_values(), settings.app_insights_connection)

# The SDK parses every history event's timestamp with dateutil on every replay: about 70% of a replay's CPU. The
# same values come out of the standard library's ISO parser (tests/functions/test_sdk_timestamps.py checks).
for _module in ("azure.durable_functions.models.history.HistoryEvent",
                "azure.durable_functions.models.DurableOrchestrationStatus"):
    importlib.import_module(_module).dt_parse = parse_iso
