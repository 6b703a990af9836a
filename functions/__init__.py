"""Azure Functions bindings: one blueprint per capability, thin by design."""
from . import _bootstrap  # noqa: F401  - settings and logging before any blueprint loads
