"""Azure Functions bindings: one blueprint per capability, thin by design."""
