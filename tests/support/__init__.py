"""Helpers shared by the test suites: processes on loopback and polling."""
