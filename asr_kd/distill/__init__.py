"""The modality-free distillation core: it imports torch, and of this project only
``asr_kd.errors`` and ``asr_kd.io`` (no audio, image or CLI code).

Shared by the image recipe (recipes/mnist) and the ASR recipe. Modules:

- ``losses``: soft-target KL (``T^2``-scaled), logit matching, masked means.
- ``targets``: dense or top-k teacher targets and how top-k drops mass.
- ``objective``: the total loss as named weighted terms that print as a formula.
- ``ensemble``: arithmetic / geometric mean of member distributions.
- ``cache``: teacher outputs stored top-k per ID, sharded, fingerprinted; its code is in
  ``cache_format`` (the files on disk), ``cache_writer``, ``cache_reader`` and ``cache_join``
  (one cache written by several processes, each its part, then joined).
- ``hints``: intermediate-layer distillation through forward hooks.
- ``specialists``: generalist + specialists with a dustbin class (the paper's Section 5).
- ``online``: peers and a student trained together in one pass (online / mutual distillation).
"""

from .cache import CacheError, CacheWriter, TeacherCache, join_parts, part_dir
from .ensemble import combine
from .hints import HintLoss
from .losses import logit_matching_loss, masked_mean, soft_target_kl, soft_target_loss
from .objective import DistillationLoss, LossOutput, WeightedLoss
from .online import OnlineDistillation
from .targets import TopK

__all__ = [
    "CacheError",
    "CacheWriter",
    "HintLoss",
    "TeacherCache",
    "DistillationLoss",
    "LossOutput",
    "OnlineDistillation",
    "TopK",
    "WeightedLoss",
    "combine",
    "join_parts",
    "logit_matching_loss",
    "masked_mean",
    "part_dir",
    "soft_target_kl",
    "soft_target_loss",
]
