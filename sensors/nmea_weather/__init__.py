"""NMEA 0183 weather stations ($WIMDA, $WIMWV, $WIXDR: Airmar, Gill, Lufft ...) on a serial port.

The driver streams: every valid sentence with a measured value becomes a sample. Import
``.config`` for the config model and ``.driver`` for the driver; this module imports nothing.
"""
