"""Shared feature embedding: the only parameters shared by all tasks (HTLNet §2.1).

Every categorical field owns a block of rows in one embedding table (row 0 of each block is the
out-of-vocabulary row, row 1 the missing-value row); every numeric field ``j`` is embedded as
``x_j * W_j + b_j`` when observed and as a learned vector ``M_j`` when missing.  The output is the
concatenation of all field embeddings.

Because the gradient rule (HTLNet §4) needs each task's gradient on these parameters, the module can
turn a gradient with respect to its *output* into the gradient with respect to its *parameters*
restricted to the rows present in the batch (:meth:`SharedEmbedding.sparse_grad`): embedding gradients
are sparse, so the rule costs O(batch x fields x dim), not O(table size).
"""

import torch
from torch import nn


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

    Notes
    -----
    ``forward(cat, num, num_missing)`` takes ``cat`` int64 (batch, n_categorical) per-field ids,
    ``num`` float32 (batch, n_numeric) with missing values already set to 0, ``num_missing`` bool
    (batch, n_numeric), and returns float32 (batch, (n_categorical + n_numeric) * d).
    """

    def __init__(self, cardinalities, n_numeric, embedding_dim):
        super().__init__()
        cardinalities = [int(c) for c in cardinalities]
        self.n_categorical = len(cardinalities)
        self.n_numeric = int(n_numeric)
        self.embedding_dim = int(embedding_dim)
        offsets = torch.tensor([0] + cardinalities[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets[: self.n_categorical], persistent=False)
        d = self.embedding_dim
        self.table = nn.Parameter(torch.randn(max(sum(cardinalities), 1), d) * 0.05)
        self.num_weight = nn.Parameter(torch.randn(self.n_numeric, d) * 0.05)
        self.num_bias = nn.Parameter(torch.zeros(self.n_numeric, d))
        self.num_missing = nn.Parameter(torch.randn(self.n_numeric, d) * 0.05)

    @property
    def n_fields(self):
        return self.n_categorical + self.n_numeric

    @property
    def output_dim(self):
        return self.n_fields * self.embedding_dim

    def forward(self, cat, num, num_missing):
        parts = []
        if self.n_categorical:
            parts.append(self.table[cat + self.offsets])  # (B, n_cat, d)
        if self.n_numeric:
            miss = num_missing.unsqueeze(-1)
            obs = num.unsqueeze(-1) * self.num_weight + self.num_bias
            parts.append(torch.where(miss, self.num_missing, obs))  # (B, n_num, d)
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
            For each task, the flattened gradient over all shared parameters, with every entry that
            is zero by construction (rows absent from the batch) left out; dot products and norms
            equal those of the full flattened gradient.
        """
        n_tasks, batch = grad_out.shape[:2]
        d = self.embedding_dim
        g = grad_out.reshape(n_tasks, batch, self.n_fields, d)
        pieces = []
        rows = cat.new_zeros(0)
        if self.n_categorical:
            ids = (cat + self.offsets).reshape(-1)
            rows, inverse = torch.unique(ids, return_inverse=True)
            g_cat = g[:, :, : self.n_categorical].reshape(n_tasks, -1, d)
            acc = g_cat.new_zeros(n_tasks, rows.numel(), d).index_add_(1, inverse, g_cat)
            pieces.append(acc.flatten(1))
        if self.n_numeric:
            g_num = g[:, :, self.n_categorical :]  # (T, B, n_num, d)
            observed = (~num_missing).unsqueeze(-1).to(g_num.dtype)
            g_obs = g_num * observed
            pieces.append((g_obs * num.unsqueeze(-1)).sum(1).flatten(1))  # weight
            pieces.append(g_obs.sum(1).flatten(1))  # bias
            pieces.append((g_num - g_obs).sum(1).flatten(1))  # missing vector
        return rows, torch.cat(pieces, dim=1)

    def set_sparse_grad(self, rows, flat):
        """Write a combined flattened gradient (as laid out by :meth:`sparse_grad`) into ``.grad``."""
        d = self.embedding_dim
        n_rows = rows.numel() * d
        table_grad = torch.zeros_like(self.table)
        if rows.numel():
            table_grad[rows] = flat[:n_rows].view(-1, d)
        self.table.grad = table_grad
        if self.n_numeric:
            size = self.n_numeric * d
            rest = flat[n_rows:]
            self.num_weight.grad = rest[:size].view(self.n_numeric, d).clone()
            self.num_bias.grad = rest[size : 2 * size].view(self.n_numeric, d).clone()
            self.num_missing.grad = rest[2 * size :].view(self.n_numeric, d).clone()
        else:
            for p in (self.num_weight, self.num_bias, self.num_missing):
                p.grad = torch.zeros_like(p)
