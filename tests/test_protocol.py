"""The wire protocol: JSON lines, and file bytes beside them in `+N` frames."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from peersync.replica.handler import Handler
from peersync.replica.scan import hash_bytes
from peersync.transport.agent import serve
from peersync.transport.protocol import BYTES, blob_size, decode, encode
from peersync.transport.ssh import read_frame


def split(frame: bytes) -> tuple[bytes, bytes | None]:
    """(JSON line, bytes) of one encoded frame."""
    first, _, rest = frame.partition(b"\n")
    size = blob_size(first + b"\n")
    if size is None:
        return frame, None
    line, _, blob = rest.partition(b"\n")
    assert len(blob) == size
    return line + b"\n", blob


def test_a_message_without_bytes_is_one_json_line():
    frame = encode({"id": 1, "op": "hello", "args": {"paths": ["memory/a.md"]}})
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1 and frame.startswith(b"{")
    assert decode(frame) == {"id": 1, "op": "hello", "args": {"paths": ["memory/a.md"]}}


def test_bytes_travel_raw_after_the_line_and_come_back_as_bytes():
    message = {"id": 2, "args": {"items": [{"path": "memory/a.md", "data": b"one\n\x00\xff"},
                                           {"path": "memory/b.md", "data": b""}],
                                 "by_path": {"memory/c.md": b"\n\n"}}}
    frame = encode(message)
    assert frame.startswith(b"+8\n") and frame.endswith(b"one\n\x00\xff\n\n")
    line, blob = split(frame)
    assert len(line) < 200  # the JSON holds references, not the content
    assert decode(line, blob) == message


def test_any_message_of_plain_values_and_bytes_comes_back_as_it_went():
    """Encoding skips json's check for circular references (messages are made of plain values): any
    such message still travels whole, names that are not UTF-8 (lone surrogates) included, and
    its JSON is what the checking encoder writes."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = st.text(st.characters(exclude_categories=()), max_size=12)  # (lone surrogates too)
    keys = names.filter(lambda k: k != BYTES)
    leaves = st.none() | st.booleans() | st.integers(-2**63, 2**64) | names | st.binary(max_size=20)
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                          max_leaves=20)

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(keys, values, max_size=4))
    def check(message):
        frame = encode(message)
        line, blob = split(frame)
        assert decode(line, blob) == message
        if blob is None:
            checked = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
            assert line == checked.encode("utf-8", "backslashreplace") + b"\n"

    check()


def test_bad_frames_and_references_are_refused():
    assert blob_size(b'{"id":1}\n') is None
    assert blob_size(b"+12\n") == 12
    for header in (b"+\n", b"+x\n", b"+-1\n", b"+12", b"+99999999999\n"):
        with pytest.raises(ValueError):
            blob_size(header)
    for ref in ([0, 5], [3, 1], [-1, 1], [0.5, 1], "0,1", [0]):
        with pytest.raises(ValueError):
            decode(json.dumps({"data": {"/bytes": ref}}).encode(), b"abc")
    # a dict that merely has such a key among others stays a dict
    assert decode(b'{"x":{"/bytes":[0,1],"y":1}}', b"a") == {"x": {"/bytes": [0, 1], "y": 1}}
    with pytest.raises(TypeError):
        encode({"data": bytearray(b"x")})


def test_read_frame_reads_lines_and_frames_and_sees_a_cut_as_eof():
    async def frames(data: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        out = []
        while True:
            line, blob = await read_frame(reader)
            if not line.endswith(b"\n"):
                return out
            out.append(decode(line, blob))

    one, two = encode({"id": 1}), encode({"id": 2, "data": b"xyz"})
    assert asyncio.run(frames(one + two)) == [{"id": 1}, {"id": 2, "data": b"xyz"}]
    assert asyncio.run(frames(one + two[:-1])) == [{"id": 1}]  # the last frame was cut short


def test_the_agent_installs_from_a_frame_and_stops_at_a_cut_one(tmp_path):
    (tmp_path / "memory").mkdir()
    data = b"hello\n"
    item = {"path": "memory/a.md", "expect": None, "new": [len(data), 1_700_000_000_000_000_000, 0o644,
                                                            hash_bytes(data)], "data": data}
    cut = encode({"id": 2, "op": "install", "args": {"items": [{**item, "path": "memory/b.md"}]}})[:-2]
    out = io.BytesIO()
    assert serve(Handler(tmp_path), io.BytesIO(encode({"id": 1, "op": "install", "args": {"items": [item]}}) + cut),
                 out) == 0
    [reply] = [decode(line) for line in out.getvalue().splitlines(keepends=True)]
    assert reply["ok"] and reply["result"]["results"][0]["ok"]
    assert (tmp_path / "memory/a.md").read_bytes() == data and not (tmp_path / "memory/b.md").exists()


def test_a_large_inline_install_keeps_per_file_results_in_order(tmp_path):
    """Enough files for the agent's two writer threads: each result stays with its item, and a
    bad one is refused alone."""
    (tmp_path / "memory").mkdir()
    items = []
    for i in range(150):
        data = f"file {i}\n".encode() * (i + 1)
        items.append({"path": f"memory/d{i % 7}/f{i:03d}.md", "expect": None,
                      "new": [len(data), 1_700_000_000_000_000_000 + i, 0o644, hash_bytes(data)], "data": data})
    items[40]["data"] = b"not what was scanned"
    items[41]["path"] = "../escape.md"
    handler = Handler(tmp_path)
    results = handler.op_install(items)["results"]
    assert [r["path"] for r in results] == [i["path"] for i in items]
    assert [i for i, r in enumerate(results) if not r["ok"]] == [40, 41]
    for i, item in enumerate(items):
        if i not in (40, 41):
            target = tmp_path / item["path"]
            assert target.read_bytes() == item["data"] and target.stat().st_mtime_ns == item["new"][1]
    assert not (tmp_path.parent / "escape.md").exists()
    staging = handler.staging
    handler.op_unstage()
    assert not staging.exists()


def test_the_agent_reads_the_next_request_while_it_handles_one_and_answers_in_order(tmp_path):
    """While one request is handled the next one is read (its bytes leave SSH's window), never
    two ahead; answers keep the order, and a malformed frame still ends the session after the
    requests before it are answered."""
    import threading
    import time

    frames = [encode({"id": n, "op": "probe", "args": {"n": n}}) for n in (1, 2, 3)] + [b"{not json\n"]
    ends = [sum(len(f) for f in frames[:n + 1]) for n in range(4)]  # where each frame ends
    stream = io.BytesIO(b"".join(frames))
    seen = []

    class Probing(Handler):
        def op_probe(self, n):
            deadline = time.monotonic() + 10
            while stream.tell() < ends[n] and time.monotonic() < deadline:  # the next frame's end
                time.sleep(0.005)
            time.sleep(0.05)  # room for a reader that would read further ahead than one frame
            seen.append((n, stream.tell(), threading.current_thread() is threading.main_thread()))
            return {"n": n}

    out = io.BytesIO()
    assert serve(Probing(tmp_path), stream, out) == 2
    replies = [decode(line) for line in out.getvalue().splitlines(keepends=True)]
    assert [r.get("result") for r in replies[:3]] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert replies[3]["kind"] == "protocol" and "bad request" in replies[3]["error"]
    # during request n the stream stood at the end of request n + 1: read one ahead, no further
    assert seen == [(1, ends[1], True), (2, ends[2], True), (3, ends[3], True)]


def test_a_request_waits_for_the_ones_before_it_to_go_out_and_keeps_its_place_in_line():
    """Session.request lets what earlier requests left in the write buffer go out before it encodes
    its own (encoding a large request holds the event loop, which then could not write theirs);
    requests that waited together are still sent in the order of their ids, which is the order the
    agent answers in."""
    from peersync.transport.ssh import Session
    from peersync.workspace.peer import Peer

    class Stdin:
        def __init__(self):
            self.frames, self.flowing = [], asyncio.Event()

        def write(self, data: bytes) -> None:
            self.frames.append(decode(data))

        async def drain(self) -> None:
            await self.flowing.wait()

        def is_closing(self) -> bool:
            return False

    class Process:
        def __init__(self):
            self.stdin, self.stdout = Stdin(), asyncio.StreamReader()

    async def run():
        process = Process()
        session = Session(Peer("p", "h"), None, process, {}, 0.0, 0.0)
        asked = [asyncio.ensure_future(session.request("scan", n=n)) for n in range(5)]
        await asyncio.sleep(0.05)
        assert process.stdin.frames == []  # each waits for the buffer to empty before it is encoded
        process.stdin.flowing.set()
        while len(process.stdin.frames) < 5:
            await asyncio.sleep(0.01)
        ids = [frame["id"] for frame in process.stdin.frames]
        assert ids == sorted(ids)
        for frame in process.stdin.frames:
            process.stdout.feed_data(encode({"id": frame["id"], "ok": True, "result": {"n": frame["args"]["n"]}}))
        assert [r["n"] for r in await asyncio.gather(*asked)] == list(range(5))

    asyncio.run(run())
