"""Runs once per worker when the app loads: validated settings (a bad one stops the start), logging, SDK speed-ups."""
import collections
import functools
import importlib
import logging

from shared.clock import parse_iso
from shared.config import get_settings
from shared.errors import SettingsError
from shared.observability import configure_logging

settings = get_settings()
settings.check_for_the_app()
try:
    configure_logging(settings.log_level, settings.secret_values(), settings.app_insights_connection)
except ValueError as exc:  # the exporter refuses a malformed connection string
    raise SettingsError(f"APPLICATIONINSIGHTS_CONNECTION_STRING: {exc}") from None

# The Durable SDK parses every history event's timestamp with dateutil on every replay: about 70% of a replay's CPU.
# The standard library's ISO parser reads the same values (tests/unit/test_sdk_timestamps.py checks both).
for _name in ("azure.durable_functions.models.history.HistoryEvent",
              "azure.durable_functions.models.DurableOrchestrationStatus"):
    _module = importlib.import_module(_name)
    if hasattr(_module, "dt_parse"):
        _module.dt_parse = parse_iso
    else:  # another SDK version: replays stay right, only slower
        logging.getLogger(__name__).warning("%s has no dt_parse: history timestamps parse with its own parser", _name)

# The SDK also builds a new namedtuple class for every orchestrator call (TaskOrchestrationExecutor.__init__): a
# twentieth of a busy host's CPU. One class per name gives the same tuples.
_executor = importlib.import_module("azure.durable_functions.models.TaskOrchestrationExecutor")
if getattr(_executor, "namedtuple", None) is collections.namedtuple:
    _executor.namedtuple = functools.cache(collections.namedtuple)
