"""Call analysis: audio probing and chunking, transcripts, speakers, insights checked against the transcript."""
