"""10,000 hostile points through the one serializer and the real InfluxDB.

Every example draws a tag value and string field value from text rich in what line
protocol and InfluxQL treat specially (``, = space \\n " \\ #``, quotes, ``$ ; / *``) plus
any Unicode, and a measurement name, tag key and field key from a seeded pool of 256
hostile names each. Each point is either refused by
:func:`ingest.line_protocol.encode_point` with an error naming the part at fault, or
stored and read back identical. To keep 10,000 examples fast, the examples only encode;
the accepted points are then written in batches of 5,000 lines and read back with one
query. Derandomized: CI runs the same 10,000 examples every time.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack import StackInfo
from ingest.influx import InfluxQuery, InfluxSettings, V1Writer
from ingest.line_protocol import LineProtocolError, encode_point

EXAMPLES = 10_000
TS = 1_764_400_000_000_000_000
_special = st.sampled_from(list(",= \n\"\\#'\t$;:/*{}[]"))
_other = st.characters(exclude_categories=["Cs"])
_text = st.text(st.one_of(_special, _special, _other), min_size=1, max_size=10)
_ALPHABET = ",= \"\\#'$;:/*{}[]~_aZ9-\u00e9\u00df\u4e2d\U0001f331\u200b\u0301"


def _pool(seed: int, size: int = 256) -> list[str]:
    """Hostile names (seeded, so CI sees the same): the measurement, tag key and field key
    of the examples that draw them. A fixed pool keeps each measurement to one tag key and
    three fields: InfluxDB 1.6 needs minutes for one query over thousands of measurements
    or over many series sharing wide field sets, and seconds for this layout."""
    rng = random.Random(seed)
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 8))) for _ in range(size)]


_KEYS = _pool(1)
_MEASUREMENTS = [f"{m}~{i}" for i, m in enumerate(_pool(2))]
_CLEAR_ERROR = re.compile(r"^(measurement|tag key|tag value|field key|field |point of |\[)")


def test_ten_thousand_hostile_points_are_refused_clearly_or_stored_identical(
    stack: StackInfo, influx_db: str
) -> None:
    accepted: list[tuple[str, str, dict[str, Any]]] = []
    refused: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(key=st.integers(0, len(_KEYS) - 1), text=_text, number=st.floats())
    def encode(key: int, text: str, number: float) -> None:
        tags = {_KEYS[key]: text}
        fields: dict[str, float | int | str] = {_KEYS[-1 - key]: text, "num": number}
        fields["int"] = len(accepted) - 2**62
        name = _MEASUREMENTS[key]
        ts = TS + len(accepted)
        try:
            line = encode_point(name, tags, fields, ts)
        except LineProtocolError as err:
            message = str(err)
            clear = _CLEAR_ERROR.match(message)
            assert clear is not None, message
            kind = clear.group(1).strip()
            refused[kind] = refused.get(kind, 0) + 1
            return
        accepted.append((name, line, {**tags, **fields, "time": ts}))

    started = time.monotonic()
    encode()
    encode_s = time.monotonic() - started
    total = len(accepted) + sum(refused.values())
    assert total >= EXAMPLES
    assert len(accepted) > EXAMPLES // 3, (len(accepted), refused)
    settings_ = InfluxSettings(url=stack.influx_url, database=influx_db, timeout=120)
    writer = V1Writer(settings_)
    for i in range(0, len(accepted), 5_000):
        writer.write("\n".join(line for _, line, _ in accepted[i : i + 5_000]).encode())
    query = InfluxQuery(settings_)
    started = time.monotonic()
    series = query.query("SELECT * FROM /.*/ GROUP BY *")
    stored: dict[tuple[str, int], dict[str, Any]] = {}
    for s in series:
        for values in s.values:
            row = {k: v for k, v in zip(s.columns, values, strict=True) if v is not None}
            row.update({k: v for k, v in s.tags.items() if v != ""})
            stored[(s.name, row["time"])] = row
    read_s = time.monotonic() - started
    assert len(stored) == len(accepted)
    for name, _, expected in accepted:
        row = stored[(name, expected["time"])]
        row["num"] = float(row["num"])  # JSON gives an integral float back as an int
        assert row == expected, name
    print(
        f"examples={total} stored={len(accepted)} measurements={len(series)} "
        f"refused={refused} encode_s={encode_s:.1f} read_s={read_s:.1f}"
    )
    writer.close()
    query.close()
