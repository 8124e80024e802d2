"""Prometheus metrics of the cloud processes (the default registry; `/metrics` exposes it).

Metric objects are module-level, as prometheus_client expects: registering the same name twice
in one registry is an error, so they are created once, on import.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INGEST_MESSAGES = Counter(
    "boilertwin_ingest_messages",
    "MQTT messages handled by ingest, by outcome and reason.",
    ["outcome", "reason"],
)
"""Exposed as ``boilertwin_ingest_messages_total{outcome,reason}``."""

INGEST_RETIMED = Counter(
    "boilertwin_ingest_retimed",
    "Accepted messages ordered by the cloud's receipt time instead of the device's clock, by "
    "reason (clock_untrusted: sync false; clock_ahead: too far ahead of the cloud's clock).",
    ["reason"],
)
"""Exposed as ``boilertwin_ingest_retimed_total{reason}`` (`cloud.timing`)."""

INGEST_LAG = Histogram(
    "boilertwin_ingest_lag_seconds",
    "From a message being built on the gateway (its trusted ts) to its commit in the cloud, "
    "for newly stored messages: the backlog a fleet shows as latency (outbox, broker queue, "
    "ingest).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0),
)

INGEST_LATENCY = Histogram(
    "boilertwin_ingest_handle_seconds",
    "Time to handle one MQTT message (verify, store, apply), in seconds: with batched ingest, "
    "the time its whole batch took.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

INGEST_BATCH = Histogram(
    "boilertwin_ingest_batch_messages",
    "Messages per ingest transaction (group commit): 1 under light load, larger as it grows.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)

QUARANTINED = Counter(
    "boilertwin_quarantined",
    "Inputs set aside because handling them failed, by stage (ingest: a message; gaps: a device).",
    ["stage"],
)
"""Exposed as ``boilertwin_quarantined_total{stage}``."""

LOOP_FAILURES = Counter(
    "boilertwin_loop_failures",
    "Background loops that failed (or ended) and were restarted by the supervisor, by loop.",
    ["loop"],
)
"""Exposed as ``boilertwin_loop_failures_total{loop}``."""

LOOP_UP = Gauge(
    "boilertwin_loop_up",
    "1 while a supervised background loop runs, 0 while it waits to be restarted.",
    ["loop"],
)

LOGINS = Counter(
    "boilertwin_logins",
    "Login attempts by channel (api, portal) and outcome (success, failure, throttled).",
    ["channel", "outcome"],
)
"""Exposed as ``boilertwin_logins_total{channel,outcome}`` (`cloud.throttle`)."""
CLAIMS = Counter(
    "boilertwin_claims",
    "Gateway claim requests by outcome (accepted, again, or the reason they were refused).",
    ["outcome"],
)
"""Exposed as ``boilertwin_claims_total{outcome}`` (`cloud.provisioning`)."""
WATERMARKS_SENT = Counter(
    "boilertwin_watermarks",
    "Watermarks (what the cloud has stored) offered to devices, by outcome "
    "(sent, or not_accepted by the broker).",
    ["outcome"],
)

BROKER_FIGURES = Gauge(
    "boilertwin_broker",
    "The broker's own figures from $SYS/broker/<figure> (Mosquitto), e.g. store/messages/count "
    "(queued for sessions away or slow), publish/messages/dropped (dropped at a queue limit), "
    "clients/disconnected (persistent sessions offline).",
    ["figure"],
)
"""Set by `cloud.broker_stats` in ``cloud serve``."""

RETENTION_DROPPED = Counter(
    "boilertwin_retention_dropped_rows",
    "Rows removed by the retention policy (samples: whole partitions on PostgreSQL), by table.",
    ["table"],
)
"""Exposed as ``boilertwin_retention_dropped_rows_total{table}`` (`cloud.partitions`)."""

PREDICTOR_DAYS = Counter(
    "boilertwin_predictor_days",
    "Closed days the predictor has analysed (every boiler that reported that day).",
)
PREDICTOR_BOILER_DAYS = Counter(
    "boilertwin_predictor_boiler_days",
    "Boiler-days summed up into features and run through the detectors.",
)
PREDICTOR_WARNINGS = Counter(
    "boilertwin_predictor_warnings",
    "Predictive-maintenance warnings by event: raised, cleared (condition gone), fulfilled "
    "(the fault arrived). A warning ended by a verified repair counts where the job is.",
    ["event"],
)
"""Exposed as ``boilertwin_predictor_warnings_total{event}``."""
PREDICTOR_ERRORS = Counter(
    "boilertwin_predictor_errors",
    "Boiler-days skipped because analysing them failed, by stage (features, detect); each is "
    "logged with the boiler and the day.",
    ["stage"],
)
"""Exposed as ``boilertwin_predictor_errors_total{stage}``."""
PREDICTOR_DAY_SECONDS = Histogram(
    "boilertwin_predictor_day_seconds",
    "Wall time to analyse one closed day for the whole fleet, in seconds.",
    buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0),
)
PREDICTOR_BEHIND = Gauge(
    "boilertwin_predictor_days_behind",
    "Closed days not yet analysed (0 when the predictor is up to date).",
)
