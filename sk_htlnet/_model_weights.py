"""The weights of a model file: ``weights.safetensors`` checked against the settings before it is read.

:func:`expected_state` gives the names, dtypes and shapes of the tensors the net spec implies, by
building the torch module with every sized tensor on torch's meta device (:class:`_SizedOnMeta`:
nothing is allocated, and no torch compiler is imported).  :func:`check_weights_header` checks
the safetensors header (its length, its JSON, every tensor's dtype, shape and byte range) against
them before a byte of the tensors is read.  Every refusal is a ``ModelFileError`` naming the field.
"""

import math

import torch
from torch.overrides import TorchFunctionMode

from ._json_input import parse_json
from ._model_fields import ModelFileError, as_int, as_list, as_object, fail
from .modules import ARCHITECTURES

MAX_SAFETENSORS_HEADER = 16 << 20  # bytes of the weights' JSON header

# torch dtypes of the module's tensors and their names in the safetensors header
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
                       torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}
_ITEMSIZES = {name: torch.empty(0, dtype=dtype).element_size() for dtype, name in _SAFETENSORS_DTYPES.items()}


class _SizedOnMeta(TorchFunctionMode):
    """Tensors created from a size (``torch.empty``, ``zeros``, ``randn``, ...) go to torch's meta
    device, which allocates nothing; tensors created from Python data (``torch.tensor``) stay on the
    CPU, so a module may still turn its priors into floats (ESMM does), and their size is that of
    data already parsed from the file.

    Only torch's native meta kernels run: constructors, ``uniform_``, ``copy_``, indexing and views
    have them, but arithmetic on a meta tensor (``torch.randn(...) * 0.05``) and ``arange`` or
    ``eye`` on the meta device run Python reference kernels that import ``torch._dynamo`` (which
    creates ``$TMPDIR/torchinductor_<user>`` and reads its settings): arithmetic with a meta operand
    is answered here with an empty meta tensor of the broadcast shape and promoted dtype, and a small
    ``arange`` (at most ``_SMALL_ARANGE`` values) runs on the CPU."""

    _SIZED = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
              torch.empty_strided, torch.linspace}
    _SMALL_ARANGE = 1 << 16
    _ARITHMETIC = {"add", "sub", "mul", "div", "true_divide", "rsub", "pow", "neg", "__add__", "__radd__",
                   "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__neg__",
                   "__pow__", "__rpow__", "add_", "sub_", "mul_", "div_", "__iadd__", "__isub__", "__imul__",
                   "__itruediv__"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if func in self._SIZED and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        elif func is torch.eye and kwargs.get("device") is None:
            size = [int(a) for a in args[:2] if isinstance(a, (int, torch.SymInt))] or [int(kwargs["n"])]
            return torch.empty(size * (2 // len(size)), dtype=kwargs.get("dtype"), device="meta")
        elif func is torch.arange and kwargs.get("device") is None:
            bounds = [float(a) for a in args if isinstance(a, (int, float))]
            start, end, step = (0.0, *bounds, 1.0)[-3:] if len(bounds) == 1 else (*bounds, 1.0)[:3]
            if math.ceil((end - start) / step) > self._SMALL_ARANGE:
                kwargs["device"] = "meta"  # a size from the file: never allocated (arange's meta kernel
                # imports dynamo, but no module of this package builds a large arange)
        elif name in self._ARITHMETIC:
            operands = list(args) + list(kwargs.values())
            if any(isinstance(a, torch.Tensor) and a.is_meta for a in operands):
                tensors = [a for a in operands if isinstance(a, torch.Tensor)]
                numbers_ = [a for a in operands if isinstance(a, (bool, int, float, complex))]
                dtype = tensors[0].dtype
                for other in tensors[1:] + numbers_:
                    dtype = torch.result_type(torch.empty(0, dtype=dtype, device="meta"), other)
                if name.endswith("_") and not name.startswith("__") or name.startswith("__i"):
                    return args[0]  # in place: same shape and dtype
                shape = torch.broadcast_shapes(*(t.shape for t in tensors))
                return torch.empty(shape, dtype=dtype, device="meta")
        return func(*args, **kwargs)


def expected_state(spec):
    """``{name: (safetensors dtype, shape)}`` of the state dict of the module the spec builds,
    built with every sized tensor on torch's meta device (nothing allocated)."""
    with _SizedOnMeta():
        module = ARCHITECTURES[spec["architecture"]](**spec["module"])
    return {name: (_SAFETENSORS_DTYPES[t.dtype], list(t.shape)) for name, t in module.state_dict().items()}


def check_weights_header(data, expected):
    """Check the header of the safetensors bytes ``data`` against ``expected`` (names, dtypes,
    shapes) and the tensors' byte ranges against the data, before anything is read from it."""
    field = "weights.safetensors"
    if len(data) < 8:
        raise ModelFileError(f"{field}: {len(data)} bytes, too short for a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > min(len(data) - 8, MAX_SAFETENSORS_HEADER):
        raise ModelFileError(f"{field}: declares a header of {size} bytes; the file has {len(data) - 8} "
                             f"after the length (and a header may have at most {MAX_SAFETENSORS_HEADER})")
    header = as_object(parse_json(bytes(data[8:8 + size]), f"{field} header", MAX_SAFETENSORS_HEADER,
                                   ModelFileError), f"{field} header")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(type(v) is str for v in metadata.values()):
        fail(f"{field} __metadata__", "an object of strings", metadata)
    missing, unknown = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unknown:
        raise ModelFileError(f"{field}: tensors {missing[:5]} are missing and {unknown[:5]} unexpected for "
                             "the net that config.json describes")
    ranges = []
    for name, (dtype, shape) in expected.items():
        entry = as_object(header[name], f"{field} {name}", ("dtype", "shape", "data_offsets"))
        if entry["dtype"] != dtype or entry["shape"] != shape:
            fail(f"{field} {name}", f"dtype {dtype} and shape {shape} (from config.json)",
                 [entry["dtype"], entry["shape"]])
        offsets = as_list(entry["data_offsets"], f"{field} {name}.data_offsets", 2)
        begin, end = (as_int(o, f"{field} {name}.data_offsets", 0, len(data)) for o in offsets)
        itemsize = _ITEMSIZES[dtype]
        if end - begin != math.prod(shape) * itemsize:
            fail(f"{field} {name}.data_offsets", f"a range of {math.prod(shape) * itemsize} bytes", offsets)
        ranges.append((begin, end))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise ModelFileError(f"{field}: the tensors' byte ranges overlap or leave gaps")
        position = end
    if position != len(data) - 8 - size:
        raise ModelFileError(f"{field}: the tensors cover {position} bytes, the data has {len(data) - 8 - size}")
