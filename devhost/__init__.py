"""devhost: runs the unchanged function_app.py locally the way the Functions host and Durable extension would."""
