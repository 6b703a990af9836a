"""Runs once per worker when the app loads: validated settings (a bad one stops the start) and logging."""
from shared.config import get_settings
from shared.observability import configure_logging

settings = get_settings()
configure_logging(settings.log_level, settings.secret_values(), settings.app_insights_connection)
