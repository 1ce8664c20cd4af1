"""The pure ranking pipeline: data in, results out. Importing it builds no Celery app, opens no
connection and reads no environment."""
