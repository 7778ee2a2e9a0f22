"""Label assignment by neuron (Diehl & Cook 2015): after unsupervised learning, each neuron takes
the class it responds to most, and a sample's class is the one whose neurons respond most."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["assign_labels", "assigned_scores"]


def _check(responses: Tensor, what: str) -> None:
    if not isinstance(responses, Tensor) or responses.dim() != 2:
        raise ValueError(f"{what}: responses must be a (samples, neurons) tensor, got "
                         f"{tuple(responses.shape) if isinstance(responses, Tensor) else type(responses).__name__}")


def assign_labels(responses: Tensor, labels: Tensor, classes: int) -> Tensor:
    """Each neuron's class ``(neurons,)``: the class with its highest mean response over the
    samples of that class (a class without samples never wins)."""
    _check(responses, "assign_labels")
    if not isinstance(labels, Tensor) or labels.shape != responses.shape[:1]:
        raise ValueError(f"assign_labels: labels must be a ({responses.shape[0]},) tensor, one per sample, got "
                         f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
    mean = torch.stack([responses[labels == c].mean(0) if (labels == c).any()
                        else responses.new_full(responses.shape[1:], -math.inf) for c in range(classes)])
    return mean.argmax(0)


def assigned_scores(responses: Tensor, assignment: Tensor, classes: int) -> Tensor:
    """Class scores ``(samples, classes)``: the mean response of the neurons assigned to each
    class (``-inf`` for a class no neuron was assigned to)."""
    _check(responses, "assigned_scores")
    out = responses.new_full((responses.shape[0], classes), -math.inf)
    for c in range(classes):
        mine = assignment == c
        if mine.any():
            out[:, c] = responses[:, mine].mean(1)
    return out
