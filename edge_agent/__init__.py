"""The gateway agent: Modbus poller, durable signed outbox, MQTT uplink, safe command execution (later issue)."""
