"""Crafted model files found by an attacker review (issue 16's Pipeline files): each is refused with a
ModelFileError, quickly and without large allocations."""

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.io import ModelFileError, load_model, save_model

from _sizes import SMALL_NET


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    X, Y = make_funnel(300, n_stages=1, n_categorical=1, n_numeric=2, random_state=0)
    X = X.assign(city=[f"c{i % 7}" for i in range(len(X))])
    pre = ColumnTransformer([("city", OneHotEncoder(sparse_output=False), ["city"]),
                             ("num", StandardScaler(), ["num_0", "num_1"])])
    pipe = Pipeline([("pre", pre), ("htlnet", HTLNetRegressor(**SMALL_NET, max_iter=1, random_state=0))]).fit(X, Y)
    folder = tmp_path_factory.mktemp("files")
    save_model(pipe, folder / "pipe.htlnet")
    save_model(pipe[-1], folder / "est.htlnet")
    return folder


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {info.filename: z.read(info.filename) for info in z.infolist()}


def _write(path, members, manifest_header=None, compress=None):
    """A zip of ``members`` with a recomputed manifest; ``compress`` maps a name to a zip method."""
    manifest = dict(manifest_header or {})
    manifest.update({n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n != "manifest.json"})
    members = {**{n: d for n, d in members.items() if n != "manifest.json"},
               "manifest.json": json.dumps(manifest).encode()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = (compress or {}).get(name, zipfile.ZIP_DEFLATED)
            z.writestr(info, data)
    return path


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
@pytest.mark.parametrize("kind", ["est", "pipe"])
def test_members_compressed_with_bzip2_or_lzma_are_refused_before_decompression(files, tmp_path, kind, method):
    """A 2 KB bzip2 member made the decompressor allocate gigabytes (a MemoryError, not a
    ModelFileError) before the max_bytes cap applied; save_model writes deflate only."""
    members = _members(files / f"{kind}.htlnet")
    header = {"format": "sk_htlnet.pipeline", "version": 1} if kind == "pipe" else None
    path = _write(tmp_path / "m.htlnet", members, header, compress={"config.json": method})
    with pytest.raises(ModelFileError, match=rf"config.json: compression method {method}; expected stored"):
        load_model(path)


def _with_schema(files, tmp_path, edit, extra_members=None):
    """The Pipeline file with its skops ``schema.json`` changed in place by ``edit(schema)``."""
    members = _members(files / "pipe.htlnet")
    with zipfile.ZipFile(io.BytesIO(members["pipeline.skops"])) as z:
        inner = {info.filename: z.read(info.filename) for info in z.infolist()}
    schema = json.loads(inner["schema.json"])
    edit(schema)
    inner["schema.json"] = json.dumps(schema).encode()
    inner.update(extra_members or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in inner.items():
            z.writestr(name, data)
    members["pipeline.skops"] = buffer.getvalue()
    return _write(tmp_path / "crafted.htlnet", members, {"format": "sk_htlnet.pipeline", "version": 1})


def _with_schema_node(files, tmp_path, node, extra_members=None):
    """The Pipeline file with ``node`` added as an attribute of the Pipeline in its skops schema."""
    def add(schema):
        schema["content"]["content"]["crafted"] = node
        schema["content"]["key_types"]["content"].append(
            {"__class__": "str", "__module__": "builtins", "__loader__": "TypeNode"})
    return _with_schema(files, tmp_path, add, extra_members)


def test_a_trusted_extra_type_behind_another_node_kind_is_refused(files, tmp_path):
    """numpy.dtype is trusted as skops writes it (a DTypeNode); a reduce-based node of that name
    calls dtype.__setstate__ with a state from the file, and a crafted state crashed predict."""
    node = {"__class__": "dtype", "__module__": "numpy", "__loader__": "LossNode",
            "__reduce__": {"args": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                                    "content": []}},
            "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": []}}
    with pytest.raises(ModelFileError, match=r"builds numpy.dtype through 'LossNode'; sk_htlnet trusts it only"):
        load_model(_with_schema_node(files, tmp_path, node))


def test_an_array_read_from_a_member_other_than_a_checked_npy_file_is_refused(files, tmp_path):
    """A .bin member holding a .npy header that declares 100 GB made np.load allocate it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (10**10,)})
    node = {"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy",
            "file": "big.bin"}
    path = _with_schema_node(files, tmp_path, node, {"big.bin": buffer.getvalue() + bytes(8)})
    with pytest.raises(ModelFileError, match=r"reads an array from 'big.bin'; expected a .npy member"):
        load_model(path, max_bytes=1 << 22)


def test_a_schema_whose_references_double_at_each_level_is_refused_quickly(files, tmp_path):
    """A 35 KB file with 64 levels of {"__id__": k} references, each level naming the one below
    twice, took skops more than a minute to audit (12.6 s at 20 levels).  18 levels (262,144
    nodes) keep this test short if the check is lost: skops then loads the file."""
    leaf = {"__class__": "int", "__module__": "builtins", "__loader__": "JsonNode", "content": "0", "is_json": True}
    nodes = [{"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": [leaf], "__id__": 10**6}]
    for k in range(1, 18):
        nodes.append({"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                      "content": [{"__id__": 10**6 + k - 1}, {"__id__": 10**6 + k - 1}], "__id__": 10**6 + k})
    path = _with_schema_node(files, tmp_path, {"__class__": "list", "__module__": "builtins",
                                               "__loader__": "ListNode", "content": nodes})
    with pytest.raises(ModelFileError, match=r"expands to more than \d+ nodes through its references"):
        load_model(path)


def test_a_zip64_locator_pointing_to_a_decoy_record_does_not_hide_the_record_zipfile_reads(files, tmp_path):
    """The pre-parse check followed the locator's pointer to a decoy record declaring 4 members, while
    Python's zipfile reads the record just before the locator, which declared a million entries
    (a 94 MB file held 1.2 GB while zipfile parsed them)."""
    import struct

    data = (files / "pipe.htlnet").read_bytes()
    end = data[-22:]
    entries, directory_size, directory_at = struct.unpack("<HII", end[10:20])
    local, directory = data[:directory_at], data[directory_at:directory_at + directory_size]
    junk = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"x"

    def zip64_record(count, size, at):
        return struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, at)

    decoy = zip64_record(entries, directory_size, directory_at)
    big = directory + junk * 1000
    real = zip64_record(entries + 1000, len(big), len(local) + len(decoy))
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, len(local), 1)  # points at the decoy
    path = tmp_path / "zip64.htlnet"
    path.write_bytes(local + decoy + big + real + locator + end)
    with pytest.raises(ModelFileError, match=r"the archive declares 1004 members"):
        load_model(path)


def test_a_sparse_matrix_node_is_refused_and_n_jobs_from_the_file_is_reset(files, tmp_path):
    """A SparseMatrixNode read a .bin member with np.load_npz, whose decompression has no cap; a
    ColumnTransformer's n_jobs from the file started that many processes at predict."""
    node = {"__class__": "csr_matrix", "__module__": "scipy.sparse", "__loader__": "SparseMatrixNode",
            "type": "scipy", "file": "m.npz"}
    with pytest.raises(ModelFileError, match=r"holds a sparse matrix"):
        load_model(_with_schema_node(files, tmp_path, node))

    def transformer(node):
        if isinstance(node, dict):
            if node.get("__class__") == "ColumnTransformer":
                return node
            children = node.values()
        else:
            children = node if isinstance(node, list) else ()
        return next((found for child in children if (found := transformer(child)) is not None), None)

    def twelve_jobs(schema):
        transformer(schema)["content"]["content"]["n_jobs"] = {
            "__class__": "int", "__module__": "builtins", "__loader__": "JsonNode", "content": "12", "is_json": True}

    path = _with_schema(files, tmp_path, twelve_jobs)
    with pytest.warns(UserWarning, match=r"sets \['pre__n_jobs'\], which a model file does not choose"):
        loaded = load_model(path)
    assert loaded.get_params()["pre__n_jobs"] is None
