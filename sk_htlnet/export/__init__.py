"""Export a fitted :class:`~sk_htlnet.HTLNetRegressor` as one ONNX graph (issue 19; docs/user_guide/serving.md).

:func:`to_onnx` writes a graph whose inputs are the raw feature columns and whose output is what
``predict`` returns; :func:`onnx_inputs` turns a DataFrame into the inputs the graph takes, for
onnxruntime in Python (a service in another language builds the same tensors).  Needs the optional
``onnx`` extra (``pip install "sk-htlnet[onnx]"``: onnx, onnxscript and onnxruntime).
"""

from ._graph import input_names, onnx_inputs, to_onnx

__all__ = ["input_names", "onnx_inputs", "to_onnx"]
