"""The vectorised binary COPY encoder against bytes built field by field with ``struct``, and
awkward ids and values through both databases."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from test_publish_support import query, run_info

from batch.data.interactions import IdMap
from batch.lists import TopLists
from batch.publish import publish_run
from batch.publish.pgcopy import HEADER, TRAILER, Number, PrefetchReader, TextFields, copy_stream, encode_rows
from batch.publish.rows import RunRows


def field(data: bytes | None) -> bytes:
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data


def reference_tuple(user: str, rank: int, item: str, score: float, probability: float, source: int) -> bytes:
    prob = None if np.isnan(probability) else struct.pack(">f", probability)
    return (struct.pack(">h", 6) + field(user.encode()) + field(struct.pack(">i", rank)) + field(item.encode())
            + field(struct.pack(">f", score)) + field(prob) + field(struct.pack(">h", source)))


@pytest.mark.parametrize("users, items", [
    (["7", "10", "123456"], ["a", "bb"]),  # lengths differ: the mask path
    (["u1", "u2", "u3"], ["i1", "i2"]),  # all one length: no mask
    (["é", "日本語", ""], ["ü", "x"]),  # UTF-8 and an empty id
])
def test_encoded_rows_match_a_field_by_field_reference(users, items):
    user = np.array([0, 1, 2, 2], np.int32)
    rank = np.array([1, 1, 1, 70_000], np.int32)
    item = np.array([1, 0, 1, 0], np.int32)
    score = np.array([0.1, -3.0e38, 1.0e-38, 12.5], np.float32)
    probability = np.array([0.5, np.nan, 0.25, np.nan], np.float32)
    source = np.array([0, 1, 0, 1], np.uint8)
    fields = (TextFields.from_text(np.array(users)), Number(">i4"), TextFields.from_text(np.array(items)),
              Number(">f4"), Number(">f4", nullable=True), Number(">i2"))

    encoded = encode_rows(fields, (user, rank, item, score, probability, source))

    assert encoded == b"".join(reference_tuple(users[u], r, items[i], s, p, o) for u, r, i, s, p, o in
                               zip(user, rank, item, score, probability, source, strict=True))


def test_the_stream_is_header_blocks_trailer():
    fields = (Number(">i4"),)
    stream = list(copy_stream(fields, iter([(np.arange(5, dtype=np.int32),)]), block_rows=2))
    assert stream[0] == HEADER and stream[-1] == TRAILER and len(stream) == 5
    assert b"".join(stream[1:-1]) == b"".join(struct.pack(">hii", 1, 4, k) for k in range(5))


def test_prefetch_reader_hands_over_bytes_and_errors():
    reader = PrefetchReader(iter([b"abc", b"defg"]))
    assert [reader.read(2), reader.read(2), reader.read(), reader.read()] == [b"ab", b"c", b"defg", b""]
    reader.close()

    def failing():
        yield b"ok"
        raise ValueError("encoder broke")

    reader = PrefetchReader(failing())
    assert reader.read() == b"ok"
    with pytest.raises(ValueError, match="encoder broke"):
        reader.read()
    reader.close()
    endless = PrefetchReader(iter(lambda: b"x", None), depth=1)
    endless.close()  # a consumer that stops early does not hang the producer


def test_rows_come_in_primary_key_order_across_chunks():
    user = np.repeat(np.arange(4, dtype=np.int32), [2, 3, 1, 2])
    rank = np.array([1, 2, 1, 2, 3, 1, 1, 2], np.int32)
    lists = TopLists(user, rank, np.zeros(8, np.int32), np.zeros(8, np.float32), np.zeros(8, np.float32),
                     np.zeros(8, np.uint8))
    rows = RunRows.build("r", lists, IdMap(np.array([9, 10, 11, 100])), IdMap(np.array([1])), chunk_rows=3)
    out = [(rows.user_text[u], r) for c in rows.chunks() for u, r in zip(c.user, c.rank, strict=True)]
    assert out == [("10", 1), ("10", 2), ("10", 3), ("100", 1), ("100", 2), ("11", 1), ("9", 1), ("9", 2)]


def test_awkward_ids_and_values_survive_both_databases(db_url):
    users = IdMap.from_ids(np.array(["", "tab\there", "new\nline", "quote'\"", "back\\slash", "日本", "a,b"]))
    items = IdMap.from_ids(np.array(["NULL", "\\N", "ü"]))
    n = len(users) * 3
    user = np.repeat(np.arange(len(users), dtype=np.int32), 3)
    rank = np.tile(np.array([1, 2, 3], np.int32), len(users))
    score = np.linspace(-3e38, 3e38, n).astype(np.float32)
    score[:3] = [1e-38, -0.0, 0.1]
    probability = np.where(np.arange(n) % 2 == 0, 0.3, np.nan).astype(np.float32)
    lists = TopLists(user, rank, np.tile(np.arange(3, dtype=np.int32), len(users)), score, probability,
                     (np.arange(n) % 2).astype(np.uint8))

    publish_run(db_url, run_info("r1"), lists, users, items, item_titles=["t\tab", None, "Ünïcode \\ title"])

    stored = query(db_url, "SELECT user_id, rank, item_id, score, probability, source, title "
                           "FROM current_recommendations")
    got = {(u, r): (i, np.float32(s), p, o, t) for u, r, i, s, p, o, t in stored}
    titles = {"NULL": "t\tab", "\\N": None, "ü": "Ünïcode \\ title"}
    want = {(str(users.ids[u]), int(r)): (str(items.ids[i]), s, None if np.isnan(p) else pytest.approx(p), o,
                                          titles[str(items.ids[i])])
            for u, r, i, s, p, o in zip(*lists.columns(), strict=True)}
    assert got == want
