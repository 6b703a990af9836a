"""The AI port: one small interface for extraction, transcription, embeddings and chat, many providers."""
