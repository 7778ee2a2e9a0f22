"""Local plasticity rules and the hook-based learner that attaches them (see ``learner``)."""
from .bounds import Bound as Bound
from .bounds import Bounds as Bounds
from .bounds import Normalise as Normalise
from .desire import DesireBackprop as DesireBackprop
from .desire import desire_updates as desire_updates
from .homeostasis import AdaptiveThreshold as AdaptiveThreshold
from .learner import Learner as Learner
from .labels import assign_labels as assign_labels
from .labels import assigned_scores as assigned_scores
from .learner import attach as attach
from .rules import VDSP as VDSP
from .rules import Trigger as Trigger
from .rules import PairSTDP as PairSTDP
from .rules import RewardSTDP as RewardSTDP
from .rules import TripletSTDP as TripletSTDP

__all__ = ["assign_labels", "assigned_scores", "DesireBackprop", "desire_updates", "attach", "AdaptiveThreshold", "Learner", "Bound", "Bounds", "Normalise", "PairSTDP", "TripletSTDP", "RewardSTDP", "VDSP", "Trigger"]
