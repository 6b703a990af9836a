"""The app's version, reported by the health endpoint."""

VERSION = "0.1.0"
