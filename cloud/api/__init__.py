"""The REST API (FastAPI): twins, telemetry, thread, commands, users; all under ``/api/v1``."""
