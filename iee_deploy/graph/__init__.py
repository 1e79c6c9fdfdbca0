"""Dependency graph of coupled channels and physical pruning.

    g = build_dependency_graph(model, example_input)     # trace + channel groups (attention: whole heads)
    build_dependency_graph(vit, x, attention_units="head_dims")  # or the same dims of every head
    g.groups, g.group("layer1.0.conv1"), g.layers         # what must be pruned together, layer facts
    g.layer_channels({"layer1.0.conv1": 32})              # (cin, cout) per layer for the latency model
    small = prune_model(model, g, {"layer1.0.conv1": kept_indices})
    mask_model(model, g, keep)                            # the same, as zeroed channels in place
"""

from iee_deploy.graph.attention import AttentionUnits, layer_weight, weight_names
from iee_deploy.graph.dependency import (
    ChannelGroup,
    ChannelRef,
    DependencyGraph,
    LayerInfo,
    build_dependency_graph,
)
from iee_deploy.graph.ops import register_op
from iee_deploy.graph.prune import mask_model, prune_model, removed_channels, unit_masks

__all__ = ["AttentionUnits", "ChannelGroup", "ChannelRef", "DependencyGraph", "LayerInfo", "build_dependency_graph",
           "mask_model", "prune_model", "layer_weight", "register_op", "removed_channels", "unit_masks", "weight_names"]
