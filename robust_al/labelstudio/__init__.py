"""Label Studio integration (server in its own venv, REST client, annotator accounts, webhooks)."""
