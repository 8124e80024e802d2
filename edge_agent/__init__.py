"""The gateway agent: Modbus poller, durable signed outbox, MQTT uplink, safe commands."""

__version__ = "0.1.0"
