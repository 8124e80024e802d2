"""``boilertwin demo``: scripted scenarios against the stack ``make demo`` runs.

The scenarios talk to the demo only as an outsider would: the cloud's REST API and the
simulated boilers' control endpoints, over plain HTTP with the standard library, at the
addresses ``deploy/demo/run-demo.sh`` wrote to ``demo.json``. Nothing here imports the rest of
the cloud, the simulator or the edge agent, so what it shows is what a client of the platform
would see.

Rooms: `client` (HTTP, ``demo.json``, the narrator, the twin as the API shows it), `setup`
(``prepare``, the script's last step), `lockout` (the steps both scenarios share and the lockout
scenario), `repair` (the service platform's whole story), `scenarios` (the registry and
``run_scenario``), `cli` (the command).
"""
