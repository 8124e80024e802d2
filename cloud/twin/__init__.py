"""The product twin: one room for everything that reads or writes twin rows.

* `read`: the read model (connectivity, live values, alarms, delivery, ``twin_json``).
* `figures`: derived figures (availability, rates, fault episodes) and telemetry series.
* `rows`: finding, locking and creating a device's twin row; every writer starts here.
* `update`: the write model. Ingest, the registry and the API's PATCH change twins only
  through it (connection, telemetry, status mirror, birth, health, reported gaps, counters,
  attributes), each change bumping `Twin.version` (the ETag).
* `gaps`: seq accounting (``contiguous_seq``, unexplained gaps) and the gap sweep.
"""
