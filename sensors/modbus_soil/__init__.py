"""Modbus RTU soil probes on RS-485 (3-in-1 ... 7-in-1 NPK), register maps as profiles.

No imports here: listing drivers must not load pyserial.
"""
