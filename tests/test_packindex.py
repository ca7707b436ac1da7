"""The binary index of a pack of merge bases (replica/packindex.py), and the JSON indexes earlier
versions wrote: still read, and written anew by a prune."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peersync.core.selection import Selection
from peersync.replica import packindex, store as store_mod
from peersync.replica.packindex import PackIndex, Packs
from peersync.replica.scan import hash_bytes
from peersync.replica.store import PACK_MIN, Store

digests = st.binary(min_size=16, max_size=16).map(bytes.hex)
places = st.tuples(st.integers(0, (1 << 63) - 1), st.integers(0, (1 << 63) - 1))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(digests, places, max_size=300), st.lists(digests, max_size=40))
def test_an_index_finds_every_hash_it_holds_and_no_other(held, others):
    index = PackIndex.parse(PackIndex.from_places(held).to_bytes())
    assert len(index) == len(held)
    assert sorted(index.digests()) == sorted(held)
    for digest, place in held.items():
        assert index.find(digest) == place
    absent = [d for d in others if d not in held]
    assert all(index.find(d) is None for d in absent)
    asked = [*held, *absent]
    assert index.holding(asked) == set(held)  # many: one set
    assert index.holding(absent[:1] + list(held)[:1]) == set(list(held)[:1])  # few: a search each
    assert index.total() == sum(size for _, size in held.values())


def test_what_is_not_a_hash_or_not_an_index_finds_nothing():
    digest = hash_bytes(b"x")
    index = PackIndex.from_places({digest: (0, 1), "not hex": (0, 1), digest.upper(): (0, 1),
                                   hash_bytes(b"y"): ["a", 1], hash_bytes(b"z"): (-1, 1)})
    assert list(index.digests()) == [digest]  # the malformed rows are left out
    for asked in (digest.upper(), digest[:-1], digest + "0", "g" * 32, None, 7):
        assert index.find(asked) is None
    data = index.to_bytes()
    for damaged in (data[:-1], b"PSLBIX2\n" + data[8:], b"", data[:8] + b"\0" * 31):
        try:
            PackIndex.parse(damaged)
        except ValueError:
            continue
        raise AssertionError(f"read as an index: {damaged!r}")


def bases(count, prefix):
    return [(hash_bytes(data), data) for data in (b"%s %d\n" % (prefix, i) for i in range(count))]


def test_a_pack_is_written_with_a_binary_index_and_its_bases_found_in_either_of_two_packs(tmp_path):
    store = Store(tmp_path, Selection())
    first = bases(PACK_MIN, b"a")
    assert store.keep_bases(first) == len(first)
    [index] = store.logbase_dir.glob("pack-*.idx")
    assert index.read_bytes().startswith(packindex.MAGIC) and not list(store.logbase_dir.glob("*.json"))
    assert store.logbases([d for d, _ in first]) == dict(first)
    assert store._unkept({d for d, _ in first} | {hash_bytes(b"new")}) == {hash_bytes(b"new")}
    # The same base in two packs (a prune writes the new pack before it drops the old one): a
    # damaged copy in one is passed over for the good one in the other.
    pack = store.logbase_dir / index.name[:-4]
    store._store_bases(PACK_MIN, iter(first))
    data = bytearray(pack.read_bytes())
    data[0] ^= 1
    pack.write_bytes(bytes(data))
    assert store.logbases([first[0][0]]) == {first[0][0]: first[0][1]}


def write_legacy(store, items):
    """A pack as an earlier version wrote it: its index JSON, hash → [offset, size]."""
    name = f"pack-{os.urandom(6).hex()}"
    index, offset = {}, 0
    with open(store.logbase_dir / name, "wb") as f:
        for digest, data in items:
            f.write(data)
            index[digest] = [offset, len(data)]
            offset += len(data)
    (store.logbase_dir / f"{name}.json").write_text(json.dumps(index))
    return name


def test_a_json_index_from_an_earlier_version_is_read_and_a_prune_writes_it_anew(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "_INDEXES", {})
    store = Store(tmp_path, Selection())
    store.keep_bases(bases(PACK_MIN, b"now"))
    old = bases(2 * PACK_MIN, b"old")
    name = write_legacy(store, old)
    unreadable = write_legacy(store, bases(PACK_MIN, b"bad"))
    (store.logbase_dir / f"{unreadable}.json").write_text("{not json")
    assert store.logbases([d for d, _ in old]) == dict(old)
    assert isinstance(store._packs(), Packs) and store._unkept({d for d, _ in old}) == set()
    keep = {d for d, _ in old} | set(store._packs().indexes[next(p.name[:-4] for p in
                                                               store.logbase_dir.glob("pack-*.idx"))].digests())
    assert store.prune_logbases(keep) == 0
    names = {p.name for p in store.logbase_dir.iterdir()}
    assert f"{name}.idx" in names and f"{name}.json" not in names and name in names  # the pack stays
    assert unreadable not in names and f"{unreadable}.json" not in names  # its index unreadable: dropped
    assert not [n for n in names if n.startswith(".tmp")]
    monkeypatch.setattr(store_mod, "_INDEXES", {})  # a new process
    assert store.logbases([d for d, _ in old]) == dict(old)
    # A pack with both (a prune cut short after it wrote the new index): the new one counts and the
    # next prune drops the old.
    (store.logbase_dir / f"{name}.json").write_text("{}")
    assert store.logbases([old[0][0]]) == {old[0][0]: old[0][1]}
    store.prune_logbases(keep)
    assert not (store.logbase_dir / f"{name}.json").exists() and (store.logbase_dir / f"{name}.idx").exists()


@settings(max_examples=200, deadline=None)
@given(st.one_of(digests, st.text(max_size=40), st.binary(max_size=40), st.integers(), st.none()))
def test_a_merge_base_is_named_only_by_a_hash_in_lower_case_hex(name):
    # A blob's file name is its hash: anything else (a path, a separator, a newline, another type)
    # is refused before it names a file.
    good = isinstance(name, str) and len(name) == 32 and set(name) <= set("0123456789abcdef")
    if good:
        assert store_mod._blob_name(name) == name
    else:
        with pytest.raises(ValueError):
            store_mod._blob_name(name)


def test_a_merge_base_name_refuses_what_looks_like_a_hash():
    digest = hash_bytes(b"x")
    for bad in (digest.upper(), digest + "\n", digest[:-1], digest + "0", "../" + digest[3:],
                digest[:31] + "/", digest[:31] + "٣"):
        with pytest.raises(ValueError):
            store_mod._blob_name(bad)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=300), st.integers(0, 3 << 20)), min_size=PACK_MIN, max_size=40),
       st.data())
def test_every_base_of_a_pack_is_read_back_whole_across_the_write_buffer(tmp_path_factory, contents, data):
    # Sizes from empty to past the pack's write buffer (store.PACK_BUFFER), the same bytes twice,
    # and items a pack leaves out (no bytes, bytes that are not their hash's): each kept base is
    # found by its hash with exactly its bytes — its offset counted, not asked of the file.
    blobs = [c if isinstance(c, bytes) else os.urandom(64) * (c // 64) for c in contents]
    items = [(hash_bytes(b), b) for b in blobs]
    items.append(data.draw(st.sampled_from(items)))
    items += [(hash_bytes(b"none"), None), (hash_bytes(b"other"), b"not these bytes")]
    store = Store(tmp_path_factory.mktemp("pack"), Selection())
    kept = dict(items[:-2])
    assert store._store_bases(len(items), iter(items)) == len(kept)
    assert store.logbases([*kept, hash_bytes(b"none"), hash_bytes(b"other")]) == \
        {**kept, hash_bytes(b"none"): None, hash_bytes(b"other"): None}
