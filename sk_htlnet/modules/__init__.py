"""Torch modules of HTLNet, one per file (no scikit-learn or pandas here)."""

from .embedding import SharedEmbedding
from .fusion import InformationFusion
from .htlnet import HTLNet
from .label_embedding import LabelEmbedding
from .tower import Tower

__all__ = ["HTLNet", "InformationFusion", "LabelEmbedding", "SharedEmbedding", "Tower"]
