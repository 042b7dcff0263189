"""Torch modules of HTLNet and its baselines, one per file (no scikit-learn or pandas here)."""

from .aitm import AITM
from .base import MultiTaskModel
from .embedding import SharedEmbedding
from .esmm import ESMM
from .fusion import InformationFusion
from .htlnet import HTLNet
from .label_embedding import LabelEmbedding
from .mmoe import MMoE
from .ple import PLE
from .shared_bottom import SharedBottom
from .single_task import SingleTask
from .tower import Tower

ARCHITECTURES = {
    "htlnet": HTLNet,
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "esmm": ESMM,
    "aitm": AITM,
}
"""Model class of each ``architecture`` name of :class:`~sk_htlnet.HTLNetRegressor`."""

__all__ = [
    "AITM", "ARCHITECTURES", "ESMM", "HTLNet", "InformationFusion", "LabelEmbedding", "MMoE",
    "MultiTaskModel", "PLE", "SharedBottom", "SharedEmbedding", "SingleTask", "Tower",
]
