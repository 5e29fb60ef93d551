"""The node input cache's parts that need no engine: mount sources only kqi can name, content
hashes known before any tar exists, and writing an input onto shared storage from an untrusted tar
(kqi/jobs/node_cache.py, kqi/jobs/sources.py; on engines: tests/test_input_cache_on_engines.py)."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from kqi.backends import registry as backends
from kqi.backends.base import CachedInput, NodeError
from kqi.jobs import node_cache
from kqi.jobs.files import JobFiles
from kqi.jobs.sources import input_hash, output_digest
from kqi.models import Node

HASH = "0123456789abcdef" * 4


@pytest.mark.parametrize("values", [
    {},
    {"volume": "kqi-cache-site-0123", "host_path": "/srv/share"},
    {"volume": "/etc"},
    {"volume": "my-volume"},
    {"volume": "kqi-cache-x/../y"},
    {"host_path": "relative/folder"},
    {"host_path": "/srv/share/../../etc"},
    {"host_path": "/srv//share"},
    {"host_path": "/srv/share/"},
])
def test_a_mount_source_is_a_cache_volume_or_a_plain_absolute_folder(values):
    with pytest.raises(ValueError):
        CachedInput("/kqi/input", **values)


def test_names_on_nodes_and_shares_come_from_hashes_alone():
    assert CachedInput("/kqi/input", volume=node_cache.volume_name("site:1", HASH)).volume == \
        "kqi-cache-site-1-0123456789abcdef0123456789abcdef"
    assert str(node_cache.shared_folder("/srv/share", HASH)) == f"/srv/share/kqi-inputs/{HASH}"
    for bad in ("../../etc", HASH.upper(), HASH[:-1], HASH + "/x"):
        with pytest.raises(ValueError):
            node_cache.shared_folder("/srv/share", bad)
        with pytest.raises(ValueError):
            node_cache.ReadOnlyInput("/kqi/input", bad, lambda scratch: scratch)


def test_input_hashes_are_deterministic_and_never_shared_between_kinds_or_identities():
    assert input_hash("git", "https://h/r.git", "a" * 40) == input_hash("git", "https://h/r.git", "a" * 40)
    distinct = {input_hash("git", "https://h/r.git", "a" * 40), input_hash("git", "https://h/s.git", "a" * 40),
                input_hash("dataset", HASH), input_hash("output", HASH), input_hash("data", HASH),
                input_hash("outputs", f"1={HASH}"), input_hash("outputs", f"2={HASH}")}
    assert len(distinct) == 7


def test_a_jobs_output_digest_follows_its_files_and_not_where_they_are(tmp_path):
    for job_id, text in ((1, b"w1"), (2, b"w1"), (3, b"w2")):
        files = JobFiles(tmp_path, job_id)
        (files.output / "sub").mkdir(parents=True)
        (files.output / "sub" / "model.bin").write_bytes(text)
        (files.output / "value.txt").write_bytes(b"0.9\n")
    first = output_digest(tmp_path, 1)
    assert output_digest(tmp_path, 1) == first == output_digest(tmp_path, 2) != output_digest(tmp_path, 3)
    assert (JobFiles(tmp_path, 1).root / "output-digest.json").is_file()  # remembered for the next start
    model = JobFiles(tmp_path, 1).output / "sub" / "model.bin"
    model.write_bytes(b"w9")
    os.utime(model, ns=(1, 1))  # another content: another size or time, so the memo is not trusted
    assert output_digest(tmp_path, 1) != first


def _tar(tmp_path, members) -> Path:
    target = tmp_path / "input.tar"
    with tarfile.open(target, "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


def _member(name, data=None, **attrs):
    info = tarfile.TarInfo(name)
    if data is not None:
        info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def write_to_share(share, build, scratch) -> str:
    """Place one input on a node with shared storage (which needs neither a database nor an engine)."""
    node = Node(name="n", url="unix:///x.sock", shared_storage=str(share))
    [mount] = node_cache.place(None, node, None, [node_cache.ReadOnlyInput("/kqi/input", HASH, build)], scratch=scratch,
                               pins=node_cache.Pins(), site="s", budget_gb=1)
    return mount.host_path


def test_writing_an_input_onto_shared_storage_keeps_every_member_inside_its_folder(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = _tar(tmp_path, [
        _member("training/1/a.csv", b"1,2\n", mode=0o600),
        _member("link-out", type=tarfile.SYMTYPE, linkname=str(outside)),
        _member("link-out/planted", b"x"),  # through a link: refused
        _member("../escaped", b"x"),
        _member("hard", type=tarfile.LNKTYPE, linkname=str(outside / "target")),
        _member("fifo", type=tarfile.FIFOTYPE),
    ])
    with pytest.raises(NodeError):
        write_to_share(share, lambda _s: tar, tmp_path)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped").exists()
    assert list((share / "kqi-inputs").iterdir()) == []  # nothing half-written stays

    tar = _tar(tmp_path, [_member("training/1/a.csv", b"1,2\n", mode=0o600),
                          _member("link", type=tarfile.SYMTYPE, linkname="training/1/a.csv"),
                          _member("hard", type=tarfile.LNKTYPE, linkname="training/1/a.csv"),
                          _member("fifo", type=tarfile.FIFOTYPE)])
    folder = share / "kqi-inputs" / HASH
    assert write_to_share(share, lambda _s: tar, tmp_path) == str(folder)
    assert (folder / "training" / "1" / "a.csv").read_bytes() == b"1,2\n"
    assert os.readlink(folder / "link") == "training/1/a.csv"
    assert not (folder / "hard").exists() and not (folder / "fifo").exists()  # only files, folders and links
    assert (folder / "training" / "1" / "a.csv").stat().st_mode & 0o444 == 0o444  # any container user reads it
    assert (folder / "training").stat().st_mode & 0o777 == 0o755
    # written once: the next start finds it complete and builds nothing
    assert write_to_share(share, lambda _s: pytest.fail("built again"), tmp_path) == str(folder)


def test_a_share_that_is_not_there_is_an_error_not_a_new_folder(tmp_path):
    share = tmp_path / "unmounted"
    with pytest.raises(NodeError, match="is the share mounted"):
        write_to_share(share, lambda _s: pytest.fail("built for nothing"), tmp_path)
    assert not share.exists()


def test_a_node_whose_backend_cannot_mount_volumes_gets_no_inputs_shipped(tmp_path):
    from tests.backends.test_registry import Plain  # a backend that can do none of the optional things

    backend = backends.register(Plain())
    try:
        node = Node(name="p", url="plain:///x", shared_storage=str(tmp_path))
        with pytest.raises(NodeError, match=r"backend \(plain\) cannot mount read-only input volumes") as raised:
            node_cache.place(None, node, None, [node_cache.ReadOnlyInput("/kqi/input", HASH, lambda _s: pytest.fail(
                "built for nothing"))], scratch=tmp_path, pins=node_cache.Pins(), site="s", budget_gb=1)
        assert raised.value.infrastructure is False and list(tmp_path.iterdir()) == []
    finally:
        backends.unregister(backend.name)
