"""The WhatsApp assistant behind WAHA: webhook checks, event triage, pacing, retrieval and replies."""
