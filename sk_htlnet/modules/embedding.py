"""Shared feature embedding: the only parameters shared by all tasks (HTLNet §2.1).

Every categorical field owns a block of rows in one embedding table (row 0 of each block is the
out-of-vocabulary row, row 1 the missing-value row).  Every numeric field ``j`` is embedded by one of
the embeddings of :data:`NUMERIC_EMBEDDINGS` when observed and as a learned vector ``M_j`` when missing:

- ``"linear"``: ``x_j W_j + b_j`` (HTLNet's sketch; one direction per field);
- ``"piecewise_linear"``: ``PLE(x_j) W_j + b_j``, where ``PLE`` is the piecewise-linear encoding of
  Gorishniy et al. (NeurIPS 2022, "On Embeddings for Numerical Features in Tabular Deep Learning",
  eq. 1): with bin edges ``b_0 < ... < b_T`` from training quantiles, component ``t`` is
  ``clip((x - b_{t-1}) / (b_t - b_{t-1}), 0, 1)``;
- ``"periodic"``: ``ReLU(concat(cos(2 pi c_j x_j), sin(2 pi c_j x_j)) W_j + b_j)`` with trainable
  frequencies ``c_j`` (the same paper's "PLR" embedding, section 3.3).

(The estimator's fourth numeric encoding, ``"quantile"``, is not an embedding: the
:class:`~sk_htlnet.preprocessing.FeatureEncoder` turns each numeric field into a categorical field
of bucket ids, which live in the table.)  The output is the concatenation of all field embeddings.

Because the gradient rule (HTLNet §4) needs each task's gradient on these parameters, the module can
turn a gradient with respect to its *output* into the gradient with respect to its *parameters*
restricted to the rows present in the batch (:meth:`SharedEmbedding.sparse_grad`): embedding gradients
are sparse, so the rule costs O(batch x fields x dim), not O(table size).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

NUMERIC_EMBEDDINGS = ("linear", "piecewise_linear", "periodic")
N_FREQUENCIES = 16  # periodic encoding: frequencies per field
FREQUENCY_SCALE = 0.1  # their initial standard deviation, on standardised values


class SharedEmbedding(nn.Module):
    """Embedding of categorical and numeric fields into one vector per row.

    Parameters
    ----------
    cardinalities : sequence of int
        Number of embedding rows for each categorical field, OOV and missing rows included.
    n_numeric : int
        Number of numeric fields.
    embedding_dim : int
        Dimension ``d`` of every field embedding.
    numeric_encoding : {"linear", "piecewise_linear", "periodic"}, default="linear"
        How observed numeric values are embedded (module docstring).
    numeric_edges : sequence of sequence of float, optional
        For "piecewise_linear": the sorted bin edges of each numeric field on the scale of ``num``
        (a field with fewer than two distinct edges has no bins and is embedded by ``b_j`` alone).

    Attributes
    ----------
    sparse : bool
        If True (set by the training loop for ``sparse_updates``), the table's gradient is a sparse
        COO tensor holding only the rows of the batch, for ``torch.optim.SparseAdam``.

    Notes
    -----
    ``forward(cat, num, num_missing)`` takes ``cat`` int32 or int64 (batch, n_categorical) per-field ids,
    ``num`` float32 (batch, n_numeric) with missing values already set to 0, ``num_missing`` bool
    (batch, n_numeric), and returns float32 (batch, (n_categorical + n_numeric) * d).
    """

    def __init__(self, cardinalities, n_numeric, embedding_dim, numeric_encoding="linear", numeric_edges=None):
        super().__init__()
        if numeric_encoding not in NUMERIC_EMBEDDINGS:
            raise ValueError(f"numeric_encoding must be one of {NUMERIC_EMBEDDINGS}, got {numeric_encoding!r}")
        cardinalities = [int(c) for c in cardinalities]
        self.n_categorical = len(cardinalities)
        self.n_numeric = n = int(n_numeric)
        self.embedding_dim = d = int(embedding_dim)
        self.numeric_encoding = numeric_encoding
        offsets = torch.tensor([0] + cardinalities[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets[: self.n_categorical], persistent=False)
        self.table = nn.Parameter(torch.randn(max(sum(cardinalities), 1), d) * 0.05)
        self.sparse = False
        self.num_frequencies = None
        if self.numeric_encoding == "piecewise_linear":
            if numeric_edges is None or len(numeric_edges) != n:
                raise ValueError(f"numeric_encoding='piecewise_linear' needs numeric_edges for {n} fields")
            n_bins = max([len(e) - 1 for e in numeric_edges] + [1])
            low = torch.full((n, n_bins), 1e30)  # padded bins: x - low < 0, so they encode to 0
            width = torch.ones(n, n_bins)
            for j, edges in enumerate(numeric_edges):
                edges = torch.as_tensor(edges, dtype=torch.float32)
                if edges.numel() >= 2:
                    low[j, : edges.numel() - 1] = edges[:-1]
                    width[j, : edges.numel() - 1] = (edges[1:] - edges[:-1]).clamp_min(1e-12)
            self.register_buffer("bin_low", low)
            self.register_buffer("bin_width", width)
            self.num_weight = nn.Parameter(torch.randn(n, n_bins, d) * 0.05)
        elif self.numeric_encoding == "periodic":
            self.num_weight = nn.Parameter(torch.randn(n, 2 * N_FREQUENCIES, d) / math.sqrt(2 * N_FREQUENCIES))
        else:
            self.num_weight = nn.Parameter(torch.randn(n, d) * 0.05)
        self.num_bias = nn.Parameter(torch.zeros(n, d))
        self.num_missing = nn.Parameter(torch.randn(n, d) * 0.05)
        if self.numeric_encoding == "periodic":
            self.num_frequencies = nn.Parameter(torch.randn(n, N_FREQUENCIES) * FREQUENCY_SCALE)

    @property
    def n_fields(self):
        return self.n_categorical + self.n_numeric

    @property
    def output_dim(self):
        return self.n_fields * self.embedding_dim

    def _numeric_parameters(self):
        return [p for p in (self.num_weight, self.num_bias, self.num_missing, self.num_frequencies) if p is not None]

    def _embed_numeric(self, num, num_missing):
        """(batch, n_numeric, d) embeddings of the numeric fields."""
        if self.numeric_encoding == "piecewise_linear":
            ple = ((num.unsqueeze(-1) - self.bin_low) / self.bin_width).clamp(0.0, 1.0)  # (B, n, T)
            obs = torch.einsum("bnt,ntd->bnd", ple, self.num_weight) + self.num_bias
        elif self.numeric_encoding == "periodic":
            angle = 2 * math.pi * num.unsqueeze(-1) * self.num_frequencies  # (B, n, F)
            features = torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)
            obs = torch.relu(torch.einsum("bnf,nfd->bnd", features, self.num_weight) + self.num_bias)
        else:
            obs = num.unsqueeze(-1) * self.num_weight + self.num_bias
        return torch.where(num_missing.unsqueeze(-1), self.num_missing, obs)

    def forward(self, cat, num, num_missing):
        parts = []
        if self.n_categorical:
            parts.append(F.embedding(cat + self.offsets, self.table, sparse=self.sparse))  # (B, n_cat, d)
        if self.n_numeric:
            parts.append(self._embed_numeric(num, num_missing))  # (B, n_num, d)
        return torch.cat(parts, dim=1).flatten(1)

    # ---- sparse per-task parameter gradients for the gradient rule --------------------------------
    def sparse_grad(self, grad_out, cat, num, num_missing):
        """Parameter gradients of several losses, restricted to the rows used by the batch.

        Parameters
        ----------
        grad_out : Tensor of shape (n_tasks, batch, output_dim)
            Gradient of each task's loss with respect to the output of :meth:`forward`.
        cat, num, num_missing : Tensor
            The batch inputs given to :meth:`forward`.

        Returns
        -------
        rows : Tensor of shape (n_rows,), int64
            The distinct embedding-table rows present in the batch.
        grads : Tensor of shape (n_tasks, n_params)
            For each task, the flattened gradient over all shared parameters (table rows, then the
            numeric parameters in the order of ``parameters()``), with every entry that is zero by
            construction (rows absent from the batch) left out; dot products and norms equal those of
            the full flattened gradient.
        """
        n_tasks, batch = grad_out.shape[:2]
        d = self.embedding_dim
        g = grad_out.reshape(n_tasks, batch, self.n_fields, d)
        pieces = []
        rows = torch.zeros(0, dtype=torch.long, device=cat.device)
        if self.n_categorical:
            ids = (cat + self.offsets).reshape(-1)
            rows, inverse = torch.unique(ids, return_inverse=True)
            g_cat = g[:, :, : self.n_categorical].reshape(n_tasks, -1, d)
            acc = g_cat.new_zeros(n_tasks, rows.numel(), d).index_add_(1, inverse, g_cat)
            pieces.append(acc.flatten(1))
        if self.n_numeric:
            g_num = g[:, :, self.n_categorical :]  # (T, B, n_num, d)
            params = self._numeric_parameters()
            with torch.enable_grad():  # the numeric part is small: one backward per task through it
                out = self._embed_numeric(num, num_missing)
                per_task = []
                for t in range(n_tasks):
                    grads = torch.autograd.grad(out, params, grad_outputs=g_num[t], retain_graph=t < n_tasks - 1)
                    per_task.append(torch.cat([x.reshape(-1) for x in grads]))
            pieces.append(torch.stack(per_task))
        return rows, torch.cat(pieces, dim=1)

    def set_sparse_grad(self, rows, flat):
        """Write a combined flattened gradient (as laid out by :meth:`sparse_grad`) into ``.grad``."""
        d = self.embedding_dim
        n_rows = rows.numel() * d
        if self.sparse:  # rows are distinct: an already coalesced sparse gradient
            self.table.grad = torch.sparse_coo_tensor(
                rows.unsqueeze(0), flat[:n_rows].view(-1, d), self.table.shape, is_coalesced=True,
                check_invariants=False,
            )
        else:
            table_grad = torch.zeros_like(self.table)
            if rows.numel():
                table_grad[rows] = flat[:n_rows].view(-1, d)
            self.table.grad = table_grad
        start = n_rows
        for p in self._numeric_parameters():
            if self.n_numeric:
                p.grad = flat[start : start + p.numel()].view_as(p).clone()
                start += p.numel()
            else:
                p.grad = torch.zeros_like(p)
