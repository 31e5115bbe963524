"""RTU framing on arbitrary bytes: never crashes, finds a valid answer wherever it sits."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from sensors.modbus_soil import rtu

WORDS = st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=1, max_size=10)


@given(noise=st.binary(max_size=300), slave=st.integers(1, 247), count=st.integers(1, 125))
def test_random_bytes_are_never_an_answer(noise: bytes, slave: int, count: int) -> None:
    answer = rtu.find_answer(noise, slave, 3, count)
    if not isinstance(answer, rtu.Incomplete):
        # only possible if the noise happens to hold a whole frame with a good CRC
        assert isinstance(answer, rtu.Registers | rtu.ExceptionReply)


@given(before=st.binary(max_size=80), after=st.binary(max_size=80), words=WORDS)
def test_answer_found_inside_noise(before: bytes, after: bytes, words: list[int]) -> None:
    frame = rtu.register_response(9, 4, words)
    answer = rtu.find_answer(before + frame + after, 9, 4, len(words))
    assert isinstance(answer, rtu.Registers)
    # noise could hold an earlier valid-looking frame only with a matching CRC: compare
    if answer.words != words:
        assert rtu.register_response(9, 4, answer.words) in before + frame


@given(words=WORDS, position=st.integers(0, 1000))
# 03 03 04 [02->03] 83 ...: the flip also makes "03 83", the start of an exception answer of
# slave 3, whose CRC is wrong too: two answer-shaped frames, neither a reading.
@example(words=[643, 0], position=0)
def test_a_flipped_byte_is_a_crc_error_not_a_reading(words: list[int], position: int) -> None:
    frame = bytearray(rtu.register_response(3, 3, words))
    index = 3 + position % (len(frame) - 3)  # data or CRC byte
    frame[index] ^= 0x01
    answer = rtu.find_answer(frame, 3, 3, len(words))
    assert isinstance(answer, rtu.Incomplete) and answer.bad_crc >= 1


@given(noise=st.binary(max_size=200), slave=st.integers(1, 247), start=st.integers(0, 0xFFFF))
def test_request_found_after_noise(noise: bytes, slave: int, start: int) -> None:
    buffer = bytearray(noise + rtu.read_request(slave, 3, start, 7))
    request, consumed = rtu.find_request(buffer)
    assert request is not None and consumed <= len(buffer)
    if request == rtu.Request(slave, 3, start, 7):
        assert consumed == len(buffer)


def test_exception_answer() -> None:
    answer = rtu.find_answer(rtu.exception_response(1, 3, 2), 1, 3, 7)
    assert answer == rtu.ExceptionReply(2)
    assert "illegal data address" in answer.meaning
    assert rtu.ExceptionReply(99).meaning == "unknown exception code"
