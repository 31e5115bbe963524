"""Sensor drivers: bytes on a serial port in, :class:`sensors.base.Sample` objects out.

Importing this package imports nothing else: drivers are found through
:mod:`sensors.registry` and imported only when used. A driver knows nothing of MQTT, the
outbox or the clock; the agent's scheduler drives it (see :mod:`sensors.base`).
"""
