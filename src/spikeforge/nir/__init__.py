"""NIR (Neuromorphic Intermediate Representation) export and import.

``export(model, dt=...)`` gives a ``nir.NIRGraph``; ``save(model, path, dt=...)`` writes it;
``load(graph_or_path, dt=None)`` builds a spikeforge model (time-first ``(T, B, ...)``,
any backend). NIR is continuous time: a spikeforge neuron maps through its spec's
continuous-time form, so that the graph's Euler discretisation with ``dt`` is the
spikeforge step (``convention="euler"``; ``dt`` and the convention are written into the
graph's metadata, and ``load`` reads ``dt`` from there when not given). One spikeforge
step is ``dt`` of NIR time; a spec whose own ``dt`` differs is rescaled
(``tau_NIR = tau * dt / spec.dt``). Needs the ``nir`` package (``pip install
spikeforge[nir]``). See ``docs/nir.md``.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ._errors import NIRError

from ._conventions import CONVENTIONS
from ._graph import Graph

__all__ = ["export", "save", "load", "NIRError", "CONVENTIONS", "Graph"]


def _nir():
    try:
        import nir
    except ImportError as e:
        raise ImportError("spikeforge.nir needs the nir package: pip install 'spikeforge[nir]' "
                          f"(or pip install nir) ({e})") from None
    return nir


def _check_dt(dt) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 or dt != dt or dt == float("inf"):
        raise ValueError(f"dt must be a positive finite number (the NIR time of one step), got {dt!r}")
    return float(dt)


def export(model: nn.Module, *, dt: float, input_shape=None, convention: str = "euler"):
    """The ``nir.NIRGraph`` of ``model``. ``dt``: the NIR time of one step; ``input_shape``: one
    step of one sample (default: from the first ``Linear``). ``convention``: ``"euler"`` (the
    graph's Euler step with ``dt`` is the spikeforge step), or a peer whose NIR import the
    graph must suit (``"snntorch"``, ``"spikingjelly"``, ``"norse"``: the same graph, checked
    against what that peer reproduces; see ``docs/nir.md``). Raises ``NIRError`` naming the
    module (or node), the layer and the field for anything that cannot be expressed."""
    from ._conventions import check
    from ._export import export as _export
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {tuple(CONVENTIONS)}, got {convention!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    graph = _export(model, dt=_check_dt(dt), input_shape=input_shape, nir_module=_nir())
    check(graph, convention, dt)
    graph.metadata["convention"] = convention
    return graph


def save(model: nn.Module, path, **kw) -> None:
    """``export(model, **kw)`` written to ``path`` (NIR's HDF5 format)."""
    _nir().write(str(path), export(model, **kw))


def load(graph_or_path, *, dt: float | None = None, convention: str = "euler") -> nn.Module:
    """A spikeforge model from a ``nir.NIRGraph`` or a NIR file; ``dt`` defaults to the
    graph's metadata ``dt`` (one of the two is needed). ``convention="norse"`` reads a graph
    written by Norse 1.1, whose time constants are ``dt * tau`` (its exporter's bug)."""
    from ._import import build
    nir = _nir()
    graph = graph_or_path
    if isinstance(graph_or_path, (str, Path)):
        path = Path(graph_or_path)
        if not path.is_file():
            raise NIRError(f"no NIR file at {path}")
        try:
            graph = nir.read(str(path))
        except Exception as e:   # h5py and nir raise many kinds; all mean "not a NIR file we can read"
            raise NIRError(f"{path} is not a readable NIR file: {type(e).__name__}: {e}") from None
    if type(graph).__name__ != "NIRGraph":
        raise NIRError(f"expected a nir.NIRGraph or a path to a NIR file, got {type(graph).__name__}")
    if dt is None:
        meta = getattr(graph, "metadata", None) or {}
        if "dt" not in meta:
            raise NIRError("the graph's metadata has no dt: pass load(..., dt=<NIR time of one step>)")
        dt = float(meta["dt"])
    if convention not in ("euler", "norse"):
        raise ValueError(f"convention must be 'euler' or 'norse' for load, got {convention!r}")
    dt = _check_dt(dt)
    if convention == "norse":
        graph = _norse_taus(graph, dt, nir)
    return build(graph, dt, nir)


def _norse_taus(graph, dt: float, nir):
    """A copy of a Norse-written graph with its neurons' time constants divided by ``dt``."""
    import copy
    graph = copy.deepcopy(graph)
    for node in graph.nodes.values():
        if type(node).__name__ == "NIRGraph":
            node.nodes.update(_norse_taus(node, dt, nir).nodes)
            continue
        for key in ("tau", "tau_syn", "tau_mem"):
            if hasattr(node, key):
                setattr(node, key, getattr(node, key) / dt)
    return graph
