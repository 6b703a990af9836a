"""Automation: domain events, webhook subscriptions, notifications from templates, and event rules."""
