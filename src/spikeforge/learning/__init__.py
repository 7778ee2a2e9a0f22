"""Learning beyond surrogate-gradient BPTT: exact gradients (``eventprop``) and local
plasticity rules attached by hooks (``attach`` with ``PairSTDP``, ``TripletSTDP``,
``RewardSTDP``, ``VDSP``, ``DesireBackprop``; homeostasis ``AdaptiveThreshold``; see
docs/local_learning.md)."""
from . import eventprop as eventprop
from ._rules import VDSP as VDSP
from ._rules import Trigger as Trigger
from ._rules import DesireBackprop as DesireBackprop
from ._rules import desire_updates as desire_updates
from ._rules import AdaptiveThreshold as AdaptiveThreshold
from ._rules import Bound as Bound
from ._rules import Bounds as Bounds
from ._rules import Learner as Learner
from ._rules import Normalise as Normalise
from ._rules import PairSTDP as PairSTDP
from ._rules import RewardSTDP as RewardSTDP
from ._rules import TripletSTDP as TripletSTDP
from ._rules import assign_labels as assign_labels
from ._rules import assigned_scores as assigned_scores
from ._rules import attach as attach

__all__ = ["eventprop", "attach", "Learner", "Bound", "Bounds", "Normalise", "PairSTDP", "TripletSTDP",
           "RewardSTDP", "VDSP", "Trigger", "AdaptiveThreshold",
           "DesireBackprop", "desire_updates", "assign_labels", "assigned_scores"]
