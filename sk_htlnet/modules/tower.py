"""Task tower: one MLP per task (HTLNet §2.2; AITM's sizes [128, 64, 32] are the default)."""

from torch import nn


class Tower(nn.Module):
    """ReLU MLP returning its first hidden layer (the task representation) and its last one.

    Parameters
    ----------
    input_dim : int
        Width of the input.
    units : sequence of int
        Width of each hidden layer, at least one.
    dropout : float, default=0.0
        Dropout probability after every hidden layer.

    Notes
    -----
    ``forward(x)`` maps float32 (batch, input_dim) to ``(rep, out)``: ``rep`` (batch, units[0]) is
    ``rep_t`` of HTLNet §2.2, passed to downstream tasks through the fusion unit; ``out``
    (batch, units[-1]) feeds the task's head.
    """

    def __init__(self, input_dim, units, dropout=0.0):
        super().__init__()
        units = [int(u) for u in units]
        widths = [int(input_dim)] + units
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.rep_dim = units[0]
        self.output_dim = units[-1]

    def forward(self, x):
        rep = x = self.layers[0](x)
        for layer in self.layers[1:]:
            x = layer(x)
        return rep, x
