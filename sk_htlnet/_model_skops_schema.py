"""Checks of a skops file's ``schema.json`` as data, before skops reads it (:mod:`._model_pipeline`).

skops expands a ``{"__id__": k}`` reference to the object it names and reads an array member once
per reference: a small schema can make it visit exponentially many nodes or read a member many
times.  These functions count both without expanding anything twice.
"""

from ._model_fields import ModelFileError


def member_bytes_read(schema, sizes):
    """Bytes that skops reads for the schema's references to members (once per reference)."""
    total, stack = 0, [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                total += sizes.get(node["file"], 0)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return total


def expanded_nodes(schema, member, factor=10, slack=100_000):
    """Nodes skops visits with every ``{"__id__": k}`` reference expanded to the node it names,
    refused above ``factor`` times the nodes written plus ``slack`` (a DAG of references doubles at
    each level: 64 levels in 35 KB; a fitted Pipeline's references add a few nodes, and its
    vocabularies are written out: a 2,000-category OneHotEncoder is about 15,000 nodes)."""
    defined, literal, stack = {}, 0, [schema]
    while stack:  # the definitions: a dict with an __id__ and more keys
        node = stack.pop()
        literal += 1
        if isinstance(node, dict):
            if "__id__" in node and len(node) > 1 and isinstance(node["__id__"], int):
                defined.setdefault(node["__id__"], node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    sizes, cap = {}, factor * literal + slack

    def size(node, seen):
        if isinstance(node, dict) and set(node) == {"__id__"} and node["__id__"] in defined:
            k = node["__id__"]
            if k in seen:
                raise ModelFileError(f"{member} schema.json: reference {k} refers to itself")
            if k not in sizes:
                sizes[k] = size(defined[k], seen | {k})
            return sizes[k]
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        n = 1
        for child in children:
            n += size(child, seen)
            if n > cap:
                raise ModelFileError(f"{member} schema.json expands to more than {cap} nodes through its "
                                     f"references ({literal} written): a file that would take skops too long")
        return n

    try:
        return size(schema, frozenset())
    except RecursionError:
        raise ModelFileError(f"{member} schema.json: its references nest too deep") from None


# the node kind skops writes for each type sk_htlnet trusts beyond skops' own set: a type is trusted
# as skops builds it from that node, not through any other loader (a reduce-based node named
# numpy.dtype calls dtype.__setstate__ with a state from the file, which can crash numpy)
EXTRA_TRUSTED_LOADERS = {
    "numpy.dtype": "DTypeNode",
    "sklearn.compose._column_transformer.make_column_selector": "ObjectNode",
}


def check_nodes(schema, member):
    """Refuse nodes that skops would build in ways its audit does not see: a type of
    :data:`EXTRA_TRUSTED_LOADERS` behind another loader (even when the caller trusts it), and an array node whose
    member is not a checked ``.npy`` file (skops' np.load reads any member and allocates the shape
    its header declares)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = f"{node.get('__module__')}.{node.get('__class__')}"
            loader = node.get("__loader__")
            if name in EXTRA_TRUSTED_LOADERS and loader != EXTRA_TRUSTED_LOADERS[name]:
                raise ModelFileError(f"{member} schema.json builds {name} through {loader!r}; sk_htlnet trusts it "
                                     f"only as skops writes it ({EXTRA_TRUSTED_LOADERS[name]!r})")
            if loader == "SparseMatrixNode":  # HTLNetRegressor takes dense X; np.load_npz has no size cap
                raise ModelFileError(f"{member} schema.json holds a sparse matrix, which a Pipeline file does not "
                                     "carry")
            if loader == "NdArrayNode" and "file" in node and not (
                    isinstance(node["file"], str) and node["file"].endswith(".npy")):
                raise ModelFileError(f"{member} schema.json reads an array from {str(node['file'])[:80]!r}; "
                                     "expected a .npy member")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
