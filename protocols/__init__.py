"""Pure, I/O-free definitions shared by the simulator, the edge agent and the cloud.

Register maps and value codecs, the read planner, uplink/downlink message types, their CBOR
encoding, COSE_Sign1 envelopes, topic names and typed errors. Nothing here touches a socket,
a file, a clock or a logger (a test enforces it), so every rule can be tested on bytes alone.
"""
