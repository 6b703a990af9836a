"""Intake's domain code and its adapters: plain Python, no Azure Functions imports."""
