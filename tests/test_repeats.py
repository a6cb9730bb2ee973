"""Long repeats as copies: what is found, what is left to the model, and the way back."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmzip.codec.repeats import FAR, LONG_COPY, MIN_COPY, copies, literal, restore
from llmzip.container import Copy
from llmzip.errors import CorruptArchiveError


def _noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_a_far_repeat_becomes_one_copy_of_exactly_its_bytes():
    head = _noise(20_000, 1)
    data = head + _noise(100, 2) + head[1000:3000] + _noise(50, 3)
    assert copies(data) == [Copy(20_100, 1000, 2000)]
    assert literal(data, copies(data)) == head + _noise(100, 2) + _noise(50, 3)


def test_a_copy_grows_back_to_where_the_repeat_starts():
    """The lookup hits a window a little after the repeat's start; the copy starts at it."""
    head = _noise(20_000, 4)
    data = head + b"-" + head[7:7 + 999]
    assert copies(data) == [Copy(20_001, 7, 999)]


@pytest.mark.parametrize("size, found", [(MIN_COPY - 1, []),
                                         (MIN_COPY, [Copy(20_000, 100, MIN_COPY)])])
def test_repeats_shorter_than_min_copy_are_left_to_the_model(size, found):
    head = _noise(20_000, 5)
    data = head + head[100:100 + size] + _noise(10, 6)
    assert copies(data) == found


@pytest.mark.parametrize("back, size, copied", [
    (FAR - 1, LONG_COPY - 1, False),  # in the model's window, and not long: the model's
    (FAR, LONG_COPY - 1, True),  # beyond the window
    (FAR - 1, LONG_COPY, True),  # in the window, but long
])
def test_near_repeats_are_left_to_the_model_unless_long(back, size, copied):
    """argparse.py's repeats (265-400 bytes, 0.8-2.8 KB back) cost 1.1% as copies."""
    head = _noise(back, 7)
    data = head + head[:size] + _noise(10, 8)
    assert copies(data) == ([Copy(back, 0, size)] if copied else [])


def test_random_bytes_and_text_without_long_repeats_give_no_copies():
    assert copies(_noise(100_000, 9)) == []
    prose = " ".join(f"line {i} says something else" for i in range(3000)).encode()
    assert copies(prose) == []


def test_a_periodic_file_is_copied_from_its_start_doubling_never_from_itself():
    data = b"0123456789abcdef" * 8192  # 128 KiB
    found = copies(data)
    assert found == [Copy(2**k, 0, 2**k) for k in range(12, 17)]
    assert literal(data, found) == data[:LONG_COPY]
    assert restore(literal(data, found), found, len(data)) == data


@st.composite
def files_with_repeats(draw):
    """Pieces of noise, each piece new or a slice of what came before."""
    out = bytearray(draw(st.binary(min_size=1, max_size=400)))
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()) and len(out) > 10:
            start = draw(st.integers(0, len(out) - 1))
            out += out[start:start + draw(st.integers(1, 1200))]
        else:
            out += draw(st.binary(max_size=400))
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(files_with_repeats(), st.integers(1, 600), st.integers(0, 2000), st.integers(1, 2000))
def test_literal_then_restore_gives_the_file_back(data, min_copy, far, long_copy):
    found = copies(data, min_copy, far, long_copy)
    end = 0
    for c in found:
        assert c.dest >= end and c.size >= min_copy and c.source + c.size <= c.dest
        assert c.dest - c.source >= far or c.size >= long_copy
        assert data[c.dest:c.dest + c.size] == data[c.source:c.source + c.size]
        end = c.dest + c.size
    assert restore(literal(data, found), found, len(data)) == data


def test_restore_refuses_literal_bytes_that_do_not_add_up():
    with pytest.raises(CorruptArchiveError, match="do not add up to the original size"):
        restore(b"x" * 99, [Copy(100, 0, 50)], 200)
