"""Lines of CSV, key=value or JSON printed by a microcontroller (Arduino, ESP32) on a serial port.

The driver streams: every valid complete line becomes a sample. Import ``.config`` for the
config model and ``.driver`` for the driver; this module imports nothing.
"""
