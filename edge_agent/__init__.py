"""The gateway agent: Modbus poller, durable signed outbox, MQTT uplink, safe commands.

Built by a later issue.
"""
