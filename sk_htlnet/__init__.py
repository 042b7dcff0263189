"""sk_htlnet: HTLNet (Tang et al., RecSys 2024) for hybrid funnel targets, as a scikit-learn estimator."""

from .estimator import HTLNetRegressor
from .divergence import TrainingDivergedError
from .presets import paper_params

__all__ = ["HTLNetRegressor", "TrainingDivergedError", "paper_params"]
__version__ = "0.1.0.dev0"
