"""The simulated boiler controller and LTE modem, for hardware-in-the-loop tests and demos."""
