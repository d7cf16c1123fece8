"""The network plan: importers (torch, specs), the planner (folding, layout, kernel choice,
packing, fusion, buffers) and an executor per backend. See :class:`Network`."""

from .graph import Activation
from .network import Network, NetworkProfile

__all__ = ["Activation", "Network", "NetworkProfile"]
