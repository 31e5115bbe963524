"""Config of the ``nmea_weather`` driver: which NMEA 0183 sentences a weather station sends.

Imports no device library, so a gateway config is validated without pyserial.
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from contract.wire import check_value_name
from sensors.base import StreamingConfig

SentenceType = Literal["MDA", "MWV", "XDR"]
ALL_SENTENCES: tuple[SentenceType, ...] = ("MDA", "MWV", "XDR")


class Config(StreamingConfig):
    """One NMEA 0183 weather station printing sentences on a serial port."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    driver: Literal["nmea_weather"] = "nmea_weather"
    """Driver name: nmea_weather."""
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 4800
    """Serial speed in baud: NMEA 0183 is 4800 (NMEA 0183-HS: 38400)."""
    sentences: list[SentenceType] = Field(default_factory=lambda: list(ALL_SENTENCES))
    """Sentence types read (any talker id: WIMDA, IIMDA ...); others are ignored."""
    require_checksum: bool = True
    """Reject a sentence without its *hh checksum (NMEA makes it optional for a few)."""
    xdr_names: dict[str, str] = Field(default_factory=dict)
    """XDR transducer id -> value name with unit, e.g. { TempSoil = "soil_temp_c" }. Ids
    not listed get a name from the id and the unit (common ones are built in)."""
    max_line_bytes: Annotated[int, Field(ge=82, le=65_536)] = 256
    """Longest sentence accepted, in bytes (NMEA allows 82; some stations send more)."""

    @field_validator("sentences")
    @classmethod
    def _check_sentences(cls, sentences: list[SentenceType]) -> list[SentenceType]:
        if not sentences:
            raise ValueError('sentences must name at least one of "MDA", "MWV", "XDR"')
        if len(set(sentences)) != len(sentences):
            raise ValueError(f"sentences {sentences} names a type twice")
        return sentences

    @field_validator("xdr_names")
    @classmethod
    def _check_xdr_names(cls, names: dict[str, str]) -> dict[str, str]:
        for ident, name in names.items():
            if not ident or "," in ident or "*" in ident:
                raise ValueError(f"xdr_names key {ident!r} must be a transducer id as sent")
            check_value_name(name)
        return names
