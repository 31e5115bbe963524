"""SDI-12 sensors (METER TEROS 12 / GS3, Campbell CS655 ...) through a serial SDI-12 adapter.

The driver polls: a break, then ``aM!``/``aMC!``, the service request, ``aD0!``..``aD9!``.
Import ``.config`` for the config model and ``.driver`` for the driver; this module imports
nothing.
"""
