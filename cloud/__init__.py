"""The cloud twin: verified ingest, the twin (read and write models), command lifecycle,
alarms and the digital thread, the service platform, the REST API and the web portal.

`cloud.serve` is the composition root; `docs/architecture.md` has the module map and two
walks through it (a telemetry message, a restart request).
"""
