"""Coupling facts of the dependency graph, its error messages, tracer fallback and CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_user_error, run_cli
from test_graph import random_keep, randomise_bn, rel_err
from test_graph_zoo_patterns import prunes_exactly
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph import build_dependency_graph, mask_model, prune_model, register_op
from iee_deploy.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread on a shared machine


@pytest.fixture(scope="module")
def resnet50_graph():
    return build_dependency_graph(build_model("resnet50"), torch.zeros(1, 3, 224, 224))


def test_resnet50_has_halps_four_residual_groups_and_33_others(resnet50_graph):
    g = resnet50_graph
    residual = [grp for grp in g.groups if len(grp.owners) > 1]
    assert [grp.size for grp in residual] == [256, 512, 1024, 2048]
    assert [len(grp.owners) for grp in residual] == [4, 5, 7, 4]
    for stage, grp in zip((1, 2, 3, 4), residual):
        owners = {r.name for r in grp.owners}
        assert f"layer{stage}.0.downsample.0" in owners
        assert all(name.endswith(("conv3", "downsample.0")) and name.startswith(f"layer{stage}.") for name in owners)
        assert len(grp.bn_layers) == len(grp.owners)  # each conv3/downsample conv has its BN
    single = [grp for grp in g.prunable_groups if len(grp.owners) == 1]
    assert len(single) == 33  # conv1 + conv1/conv2 of 16 bottlenecks
    assert not g.group("input").prunable and not g.group("fc").prunable
    assert g.group("fc").size == 1000 and g.group("input").size == 3


def test_resnet50_layer_facts_and_channel_counts(resnet50_graph):
    g = resnet50_graph
    conv1 = g.layers["conv1"]
    assert (conv1.kernel, conv1.stride, conv1.padding, conv1.in_hw, conv1.out_hw) == ((7, 7), (2, 2), (3, 3),
                                                                                      (224, 224), (112, 112))
    assert conv1.in_group is None and conv1.out_group == "conv1"
    fc = g.layers["fc"]
    assert fc.kind == "linear" and fc.in_group == "layer4.0.conv3" and fc.out_group is None
    assert g.layers["layer2.0.conv2"].stride == (2, 2) and g.layers["layer2.0.conv2"].out_hw == (28, 28)
    channels = g.layer_channels({"layer1.0.conv3": 200, "layer1.0.conv1": 10})
    assert channels["layer1.0.conv1"] == (64, 10)
    assert channels["layer1.0.conv2"] == (10, 64)
    for name in ("layer1.0.conv3", "layer1.0.downsample.0", "layer1.2.conv3"):
        assert channels[name][1] == 200
    assert channels["layer1.1.conv1"] == (200, 64) and channels["layer2.0.downsample.0"] == (200, 512)
    assert channels["fc"] == (2048, 1000)
    with pytest.raises(UserError, match="no channel group 'layer1.0.conv9'"):
        g.layer_channels({"layer1.0.conv9": 3})


def test_densenet_concat_offsets_and_spans():
    g = build_dependency_graph(build_model("densenet121"), torch.zeros(1, 3, 224, 224))
    grp = g.group("features.denseblock1.denselayer1.conv2")  # the first layer's 32 new channels
    assert grp.size == 32 and [r.name for r in grp.owners] == ["features.denseblock1.denselayer1.conv2"]
    assert {r.name: r.offset for r in grp.bn_layers}["features.transition1.norm"] == 64
    assert {r.name: r.offset for r in grp.consumers}["features.denseblock1.denselayer6.conv1"] == 64
    channels = g.layer_channels({grp.id: 10})
    assert channels["features.denseblock1.denselayer2.conv1"] == (64 + 10, 128)
    assert channels["features.transition1.conv"] == (256 - 22, 128)


def test_flatten_span_grouped_convs_and_squeeze_excitation():
    vgg = build_dependency_graph(build_model("vgg16_bn"), torch.zeros(1, 3, 224, 224))
    (fc0,) = vgg.group("features.40").consumers  # last conv -> avgpool 7x7 -> flatten -> linear
    assert fc0.name == "classifier.0" and fc0.channels_per_unit == 49
    assert vgg.layer_channels({"features.40": 100})["classifier.0"] == (4900, 4096)

    regnet = build_dependency_graph(build_model("regnet_y_400mf"), torch.zeros(1, 3, 224, 224))
    block = "trunk_output.block2.block2-0.f"
    grp = regnet.group(f"{block}.a.0")  # whole conv groups of 8 channels: 104 / 8 = 13 units
    assert grp.size == 13 and {r.name: r.channels_per_unit for r in grp.owners}[f"{block}.b.0"] == 8
    assert f"{block}.se.fc2" in {r.name for r in grp.owners}  # SE expand output multiplies the block features
    assert regnet.group(f"{block}.se.fc1").size == 12  # the SE squeeze is its own group
    info = regnet.layers[f"{block}.b.0"]
    cin, cout = regnet.layer_channels({grp.id: 4})[info.name]
    assert (cin, cout, info.groups_for(cin), info.groups) == (32, 32, 4, 13)

    mnv3 = build_dependency_graph(build_model("mobilenet_v3_large"), torch.zeros(1, 3, 224, 224))
    se_block = mnv3.group("features.4.block.0.0")  # expand conv, depthwise conv and SE expand are one group
    assert {"features.4.block.1.0", "features.4.block.2.fc2"} <= {r.name for r in se_block.owners}
    assert mnv3.layers["features.4.block.1.0"].depthwise


def test_preactivation_bn_on_the_residual_stream():
    g = build_dependency_graph(build_model("wrn22_2"), torch.zeros(1, 3, 32, 32))
    stream = g.group("layer2.0.shortcut")
    assert {r.name for r in stream.bn_layers} == {"layer2.1.bn1", "layer2.2.bn1", "layer3.0.bn1"}
    assert {"layer2.0.conv2", "layer2.1.conv2", "layer2.2.conv2"} <= {r.name for r in stream.owners}


def test_shufflenet_shuffle_couples_both_halves():
    g = build_dependency_graph(build_model("shufflenet_v2_x1_0"), torch.zeros(1, 3, 224, 224))
    trunk = g.group("stage4.0.branch1.2")  # the stage-4 trunk: both branches of block 0 and every branch2 end
    assert trunk.prunable and trunk.size == 29
    owners = {r.name: r.channels_per_unit for r in trunk.owners}
    assert owners["stage4.0.branch1.2"] == owners["stage4.0.branch2.5"] == 8
    assert g.group("stage3.2.branch2.0").size == 116  # branch-internal channels stay fine-grained


class Attention(nn.Module):
    """A 1-channel spatial attention conv (Torch-Pruning calls out_channels=1 depthwise) and a
    depthwise conv with channel multiplier 2."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.att = nn.Conv2d(16, 1, 7, padding=3)
        self.single = nn.Conv2d(1, 4, 3, padding=1)
        self.dw = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.head = nn.Linear(36, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        a = torch.sigmoid(self.att(x))
        y = torch.cat([self.dw(x * a), self.single(a)], dim=1)
        return self.head(y.mean([2, 3]))


def test_single_channel_conv_is_not_depthwise_and_multiplier_depthwise_prunes():
    model = randomise_bn(Attention()).eval()
    x = torch.randn(2, 3, 12, 12)
    g = build_dependency_graph(model, x[:1])
    assert not g.layers["att"].depthwise and not g.layers["single"].depthwise and g.layers["dw"].depthwise
    stem = g.group("stem")
    assert stem.size == 16 and {r.name: r.channels_per_unit for r in stem.owners} == {"stem": 1, "dw": 2}
    assert g.group("att").size == 1 and g.group("att").consumers[0].name == "single"
    keep = random_keep(g)
    pruned = prune_model(model, g, keep)
    assert pruned.dw.groups == pruned.dw.in_channels == len(keep["stem"]) and pruned.dw.out_channels == 2 * len(keep["stem"])
    with torch.no_grad():
        assert rel_err(mask_model(copy.deepcopy(model), g, keep)(x), pruned(x)) < 1e-4


class MixChannels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.mix = MixChannels()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mix(self.conv(x)).mean([2, 3]))


@pytest.mark.parametrize("tracer", ["fx", "eager"])
def test_unknown_op_is_named_with_its_module(tracer):
    with pytest.raises(UserError, match=r"torch\.cumsum in module 'mix' \(MixChannels\)"):
        build_dependency_graph(Unknown(), torch.zeros(1, 3, 8, 8), tracer=tracer)


class FunctionalGroupNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.group_norm(self.a(x), 2))


@pytest.mark.parametrize("tracer", ["fx", "eager"])
def test_group_norm_prunes_whole_groups(tracer):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Conv2d(3, 12, 3), nn.GroupNorm(3, 12), nn.ReLU(), nn.Conv2d(12, 4, 1)).eval()
    with torch.no_grad():
        model[1].weight.normal_(generator=torch.Generator().manual_seed(1))
        model[1].bias.normal_(generator=torch.Generator().manual_seed(2))
    g = build_dependency_graph(model, x[:1], tracer=tracer)
    group = g.group("0")
    assert group.prunable and group.size == 3  # one unit per GroupNorm group of 4 channels
    assert [(r.name, r.index.tolist()) for r in group.bn_layers] == [("1", [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])]
    pruned = prune_model(model, g, {"0": [0, 2]})
    norm = pruned[1]
    assert (norm.num_groups, norm.num_channels, tuple(norm.weight.shape)) == (2, 8, (8,))
    assert torch.equal(norm.bias, model[1].bias[[0, 1, 2, 3, 8, 9, 10, 11]])
    masked = mask_model(copy.deepcopy(model), g, {"0": [0, 2]})
    with torch.no_grad():
        assert torch.allclose(pruned(x), masked(x), atol=1e-6)
    assert sum(p.numel() for p in pruned.parameters()) == g.param_count({"0": 2})
    # the functional form is not a layer the graph can slice: its channels are kept
    assert not build_dependency_graph(FunctionalGroupNorm(), x[:1], tracer=tracer).group("a").prunable


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


torch.fx.wrap("swish")  # traced as one call, which the graph does not know until it is registered


def test_register_op_declares_a_custom_function():
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(swish(self.conv(x)).mean([2, 3]))

    with pytest.raises(UserError, match="op tests.test_graph_structure.swish|op test_graph_structure.swish"):
        build_dependency_graph(Custom(), torch.zeros(1, 3, 8, 8))
    register_op(swish, "pointwise")
    original = swish
    for _ in range(2):  # the second trace patches the module's name with the first one's wrapper again
        g = build_dependency_graph(Custom(), torch.zeros(1, 3, 8, 8))
        assert g.group("conv").size == 8 and g.group("conv").consumers[0].name == "fc"
        assert globals()["swish"] is original  # restored after the trace
    with pytest.raises(UserError, match="cannot register"):
        register_op(swish, "conv")  # type: ignore[arg-type]


class DataDependent(nn.Module):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if x.mean() > -100:  # always true, but only known at run time
            y = y + self.b(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(y)), 1), 1))


def test_eager_fallback_for_models_fx_cannot_trace():
    model = randomise_bn(DataDependent()).eval()
    x = torch.randn(2, 3, 8, 8)
    g = build_dependency_graph(model, x[:1])
    assert g.tracer == "eager"
    assert {r.name for r in g.group("a").owners} == {"a", "b"}  # the residual sum couples a and b
    keep = random_keep(g)
    with torch.no_grad():
        assert rel_err(mask_model(copy.deepcopy(model), g, keep)(x), prune_model(model, g, keep)(x)) < 1e-4
    with pytest.raises(UserError, match="torch.fx cannot trace DataDependent"):
        build_dependency_graph(model, x[:1], tracer="fx")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "regnet_y_400mf"])
def test_fx_and_eager_tracers_agree(name):
    model = build_model(name, 10, 32)
    fx_graph = build_dependency_graph(model, torch.zeros(1, 3, 32, 32), tracer="fx")
    eager = build_dependency_graph(model, torch.zeros(1, 3, 32, 32), tracer="eager")
    assert (fx_graph.tracer, eager.tracer) == ("fx", "eager")
    summary = [(grp.id, grp.size, grp.prunable, grp.layers) for grp in fx_graph.groups]
    assert summary == [(grp.id, grp.size, grp.prunable, grp.layers) for grp in eager.groups]
    assert fx_graph.layers == eager.layers
    assert model.training  # tracing does not leave the model in eval mode


def test_keep_validation_and_original_untouched():
    model = build_model("resnet20", 10)
    g = build_dependency_graph(model, torch.zeros(1, 3, 32, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_model(model, g, {"conv1": [0, 1, 2], "layer1.0.conv1": torch.arange(8)})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert pruned.conv1.out_channels == 3 and model.conv1.out_channels == 16
    with pytest.raises(UserError, match="group 'fc' cannot be pruned"):
        prune_model(model, g, {"fc": [0, 1]})
    with pytest.raises(UserError, match="must lie in 0..15"):
        prune_model(model, g, {"conv1": [16]})
    with pytest.raises(UserError, match="at least 1"):
        mask_model(model, g, {"conv1": []})
    with pytest.raises(UserError, match="did you mean"):
        prune_model(model, g, {"conv": [0]})
    assert mask_model(model, g, {"conv1": list(range(8))}) is model
    assert float(model.bn1.weight[8:].abs().sum()) == 0.0 and float(model.conv1.weight[8:].abs().sum()) == 0.0


def test_graph_is_a_networkx_dag_of_layers_and_ops(resnet50_graph):
    nxg = resnet50_graph.graph
    import networkx as nx

    assert nx.is_directed_acyclic_graph(nxg)
    ops = nx.get_node_attributes(nxg, "op")
    assert sum(op == "add" for op in ops.values()) == 16  # one residual sum per bottleneck
    assert nxg.nodes["conv1"]["shape"] == (1, 64, 112, 112)


def test_cli_prints_groups_and_writes_json(tmp_path):
    path = tmp_path / "groups.json"
    result = run_cli("graph", "--model", "resnet50", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert "39 channel groups (37 prunable)" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("layer3.0.conv3 "))
    assert "1024" in line and "layer3.0.downsample.0" in line
    data = json.loads(path.read_text())
    assert data["model"] == "resnet50" and len(data["groups"]) == 39
    assert data["layers"]["conv1"]["out_hw"] == [112, 112]
    assert_user_error(run_cli("graph", "--model", "resnet5"), "unknown model 'resnet5'")


class Halves(nn.Module):
    """chunk(2) then one conv per half; a flatten with a literal size; a constant channel slice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.a, self.b = nn.Conv2d(8, 6, 1), nn.Conv2d(8, 6, 1)
        self.c = nn.Conv2d(12, 5, 1)
        self.fc = nn.Linear(5 * 16 + 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = F.relu(self.bn(self.stem(x))).chunk(2, dim=1)
        y = torch.cat([self.a(p), self.b(q)], 1)
        z = self.c(y)
        return self.fc(torch.cat([z.view(z.size(0), 80), y[:, :4].mean([2, 3])], 1))


def test_chunk_balances_halves_and_literal_sizes_pin_channels():
    model = randomise_bn(Halves()).eval()
    x = torch.randn(2, 3, 4, 4)
    g = build_dependency_graph(model, x[:1])
    stem = g.group("stem")  # unit i = channel i of the first half and one of the second: halves stay equal
    assert stem.size == 8 and stem.prunable and stem.owners[0].channels_per_unit == 2
    assert not g.group("c").prunable  # view(n, 80) spells out 5 * 16
    assert not any(grp.prunable for grp in g.groups if grp.owners and grp.owners[0].name == "a")  # y[:, :4]
    keep = random_keep(g)
    with torch.no_grad():
        assert rel_err(mask_model(copy.deepcopy(model), g, keep)(x), prune_model(model, g, keep)(x)) < 1e-4


def test_relabel_matches_numpy_unique_on_both_paths():
    from iee_deploy.graph.channels import _relabel

    ids = np.array([7, 3, 7, 0, 3, 9], dtype=np.int32)
    for n in (10, 1000):  # many ids for n (marking), few (sorting)
        nodes, inverse = _relabel(ids, n)
        expected_nodes, expected_inverse = np.unique(ids, return_inverse=True)
        assert nodes.tolist() == expected_nodes.tolist() and inverse.tolist() == expected_inverse.tolist()


def test_smallest_connected_node_on_both_paths():
    """Pairs and short chains settle by label propagation; a chain longer than its rounds goes to scipy."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from iee_deploy.graph.channels import _smallest_connected

    u, v = np.array([5, 1, 6, 2]), np.array([3, 4, 2, 7])  # components {3, 5}, {1, 4}, {2, 6, 7}, {0}
    assert _smallest_connected(u, v, 8).tolist() == [0, 1, 2, 3, 1, 3, 2, 2]
    chain = np.arange(40)[::-1]  # 39-38-...-0, far longer than two rounds of pointer jumping settle
    assert _smallest_connected(chain[1:], chain[:-1], 41, rounds=2).tolist() == [0] * 40 + [40]
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 300, 200), rng.integers(0, 300, 200)
    _, component = connected_components(coo_matrix((np.ones(200), (a, b)), shape=(300, 300)), directed=False)
    expected = [min(np.flatnonzero(component == c)) for c in component]
    assert _smallest_connected(a, b, 300).tolist() == expected
    assert _smallest_connected(a, b, 300, rounds=1).tolist() == expected


def test_node_names_are_the_names_fxs_namespace_gives():
    """`_unique_name` gives the name `_Namespace.create_name(candidate, None)` gives, in the same sequence."""
    from iee_deploy.graph.trace import _target_name, _unique_name

    fxs, ours = torch.fx.graph._Namespace(), torch.fx.graph._Namespace()
    candidates = ["add", "add", "getattr", "add_1", "x", "x", "1abc", "a.b", "", "max", "max", "add_5", "add", "for",
                  _target_name(torch.Tensor.view), _target_name(F.conv2d), _target_name("__getitem__"), "layer1_0_conv1"]
    assert [_unique_name(ours, c) for c in candidates] == [fxs.create_name(c, None) for c in candidates]
    assert _target_name("__getitem__") == "getitem" and _target_name(torch.Tensor.view) == "view"


def test_deferred_width_checks_see_the_units_as_they_stood():
    """A deferred check (`_fix_along`) is answered by the units as they stood when it was asked, even where later
    unions join the ids it asked about."""
    from iee_deploy.graph.channels import ChannelAnalysis, Ids, _differ_along
    from iee_deploy.graph.trace import trace_model

    assert _differ_along(np.array([[0, 1], [0, 1]]), (1,)) and not _differ_along(np.array([[0, 1], [0, 1]]), (0,))
    analysis = ChannelAnalysis(trace_model(nn.Conv2d(3, 4, 1), torch.zeros(1, 3, 2, 2)))
    a, b, c = (Ids((1, 2), vec=analysis.units.new(2)) for _ in range(3))
    analysis._fix_along(a, 1)  # a's two channels apart now; joined by the union after: still fixed
    analysis.units.union(a.vec[:1], a.vec[1:])
    analysis.units.union(b.vec[:1], b.vec[1:])
    analysis._fix_along(b, 1)  # b's channels one unit when asked: not fixed
    analysis._fix_along(c, 0, 1)  # c's channels apart to the end: fixed
    analysis._fixes_if_varied(analysis.units.canon())
    fixed = set(np.concatenate(analysis.units.fixed).tolist())
    assert set(a.vec.tolist()) <= fixed and set(c.vec.tolist()) <= fixed and not fixed & set(b.vec.tolist())


def test_ids_made_from_their_core_when_first_asked_for():
    from iee_deploy.graph.channels import Ids

    core = np.arange(6, dtype=np.int32).reshape(1, 2, 1, 3)
    ids = Ids((2, 2, 4, 3), core=core)
    assert ids.full is None and ids.grid() is core
    assert torch.equal(ids.tensor(), torch.from_numpy(core).expand(2, 2, 4, 3)) and ids.tensor() is ids.full


def test_pair_opposites_pairs_as_a_first_come_queue_would():
    """The i-th +k pairs with the i-th -k; the rest stay unpaired (a gated MLP's halves, `_balance`)."""
    from iee_deploy.graph.channels import pair_opposites

    def queue(net: list[int]) -> tuple[list[tuple[int, int]], list[int]]:
        waiting: dict[int, list[int]] = {}
        pairs = []
        for c, k in enumerate(net):
            if waiting.get(-k):
                pairs.append((waiting[-k].pop(0), c))
            else:
                waiting.setdefault(k, []).append(c)
        return sorted(pairs), sorted(c for cs in waiting.values() for c in cs)

    a, b, left = pair_opposites(np.array([2, -1, -2, 1, 1, 2, -2, 3]))
    assert sorted(map(tuple, np.sort(np.stack([a, b], 1), 1).tolist())) == [(0, 2), (1, 3), (5, 6)]
    assert left.tolist() == [4, 7]
    rng = np.random.default_rng(0)
    for _ in range(300):
        net = rng.choice([-3, -2, -1, 1, 2, 3], size=rng.integers(0, 25))
        a, b, left = pair_opposites(net)
        got = sorted(map(tuple, np.sort(np.stack([a, b], 1), 1).tolist()))
        assert (got, left.tolist()) == queue(net.tolist())


def test_parameter_total_counts_each_shared_parameter_once():
    from iee_deploy.graph.dependency import _parameter_total

    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Sequential(shared, nn.Conv2d(3, 4, 1)), nn.Linear(4, 2, bias=False))
    assert _parameter_total(model) == sum(p.numel() for p in model.parameters()) == 12 + 16 + 8


def test_reshaped_ids_equal_the_reshaped_id_tensor():
    """The grid-only reshape of channel ids (last dim or first two dims kept) gives every position the id a full
    reshape of the id tensor gives it; other reshapes go to the general path (None)."""
    from iee_deploy.graph.channels import Ids, _reshaped_ids

    channels_last = np.arange(10, 16, dtype=np.int32).reshape(1, 1, 1, 6)
    last = Ids((2, 4, 4, 6), full=torch.from_numpy(channels_last).expand(2, 4, 4, 6), core=channels_last)
    first = Ids((2, 6, 4, 4), vec=np.arange(20, 26, dtype=np.int32))
    for ids, shape in ((last, (2, 2, 2, 2, 2, 6)), (last, (32, 6)), (last, (2, 16, 6)), (first, (2, 6, 16)),
                       (first, (2, 6, 2, 2, 2, 2))):
        out = _reshaped_ids(ids, shape)
        assert out is not None and out.shape == shape
        assert torch.equal(out.tensor(), ids.tensor().reshape(shape)), shape
    assert _reshaped_ids(last, (2, 4, 4, 2, 3)) is None  # the channel dim split into heads: the general path
    assert _reshaped_ids(first, (12, 16)) is None
    one = Ids((2, 6, 4, 4), vec=np.full(6, 7, dtype=np.int32))  # one id repeated: the general path
    assert _reshaped_ids(one, (2, 6, 16)) is None


def test_permutation_of_permute_transpose_and_swapdims():
    from iee_deploy.graph.channels import _permutation

    x = torch.empty(1, 2, 3, 4, device="meta")
    assert _permutation("permute", (x, 0, 2, 3, 1), {}, 4) == [0, 2, 3, 1]
    assert _permutation("permute", (x, (0, -1, 1, 2)), {}, 4) == [0, 3, 1, 2]
    assert _permutation("transpose", (x, 1, -1), {}, 4) == [0, 3, 2, 1]
    assert _permutation("swapdims", (x, 2, 1), {}, 4) == [0, 2, 1, 3]
    assert _permutation("permute", (x, 0, 1, 1, 2), {}, 4) is None  # not a permutation: torch's error
    assert _permutation("transpose", (x, 1, 4), {}, 4) is None
    assert _permutation("transpose", (x,), {"dim0": 1, "dim1": 2}, 4) is None  # keywords: the general path
    assert _permutation("reshape", (x, 1, 24), {}, 4) is None


class ScaledBySqrt(nn.Module):
    """math.sqrt of a traced size in the forward (attention's scale): fx wraps the math module's functions per trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import math

        y = self.conv(x)
        return self.head(y / math.sqrt(y.shape[-1]))  # a spatial size: the channels stay prunable


def test_math_functions_are_wrapped_for_each_trace_and_restored_after():
    import math

    sqrt, model, x = math.sqrt, ScaledBySqrt(), torch.randn(1, 3, 8, 8)
    for _ in range(2):  # the second trace reuses the first one's scan of the globals and its wrappers
        g = build_dependency_graph(model, x)
        assert g.tracer == "fx" and [grp.id for grp in g.prunable_groups] == ["conv"]
        assert math.sqrt is sqrt and globals().get("math") is None


class Unpacks(nn.Module):
    """Tuple unpacking of traced values, twice in one forward (the tracer reads the bytecode once)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        left, right = self.a(x).chunk(2, 1)
        y = self.b(left * right)
        n2, c2, h2, w2 = y.shape
        return y.reshape(n2, c2, h2 * w2).mean(-1) + h * w - n * c


def test_tuple_unpacking_is_traced_by_fx():
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    g = build_dependency_graph(Unpacks(), x[:1], tracer="fx")
    assert g.tracer == "fx" and [grp.id for grp in g.prunable_groups] == ["a"]
    keep = {"a": [0, 2, 3]}
    pruned = prune_model(Unpacks().eval(), g, keep)
    assert pruned.a.out_channels == 6 and pruned.b.in_channels == 3


class StarUnpacksShapes(nn.Module):
    """transformers' attention writes its view shapes as ``(*x.shape[:-1], -1, head_dim)``, and code loops over a
    shape: iterations fx itself refuses (the whole model then went to the eager tracer)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.fc1, self.fc2 = nn.Conv2d(3, 8, 2, stride=2), nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        h = self.fc1(t)
        heads = h.view((*h.shape[:-1], -1, 4)).relu()
        n = 1
        for size in t.shape[1:-1]:
            n = n * size
        return self.fc2(heads.flatten(-2)).mean(1) * (n / n)


def test_star_unpacking_and_loops_over_shapes_stay_on_fx():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert build_dependency_graph(StarUnpacksShapes(), x[:1]).tracer == "fx"
    assert prunes_exactly(StarUnpacksShapes(), x) == 1  # the embedding (fc1 is viewed by a literal head size: whole)


class DelegatesWithVarargs(nn.Module):
    """ultralytics' models: forward(x, *args, **kwargs) passes both on to predict(), and the Detect head makes its
    anchors with torch.full from a stride it reads from a buffer (a constant fx stashes on the traced model)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.register_buffer("stride", torch.tensor([8.0, 16.0]))

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self.predict(x, *args, **kwargs)

    def predict(self, x: torch.Tensor, profile: bool = False) -> torch.Tensor:
        y = self.b(self.a(x).relu())
        h, w = y.shape[2:]
        return y * torch.full((h * w, 1), self.stride[1], dtype=y.dtype).view(1, 1, h, w)


def test_varargs_forwards_and_constants_made_in_forward_stay_on_fx_and_leave_no_attribute():
    model, x = DelegatesWithVarargs().eval(), torch.randn(1, 3, 4, 4)
    attrs = set(vars(model))
    g = build_dependency_graph(model, x)
    assert g.tracer == "fx" and [grp.id for grp in g.prunable_groups] == ["a"]
    assert set(vars(model)) == attrs  # fx's stash of the stride (`_tensor_constant0`) is removed
    assert prunes_exactly(DelegatesWithVarargs(), x) == 1


class BranchesOnSizes(nn.Module):
    """Control flow on traced sizes (TF-style 'same' padding, a check of the channel count, an int() of a size)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, stride=2), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError("expected 3 channels")
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1, 0, 1))
        y = self.a(x)
        half = int(y.shape[2] / 2)
        return self.b(y[:, :, :half])


class BranchesOnData(BranchesOnSizes):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(y if y.mean() > 0 else -y)


def test_control_flow_on_sizes_stays_on_fx_and_on_data_falls_back_to_eager():
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    g = build_dependency_graph(BranchesOnSizes(), x[:1])
    assert g.tracer == "fx" and [grp.id for grp in g.prunable_groups] == ["a"]
    assert g.layers["b"].in_hw == (2, 4)  # the branch and the int() this input takes
    assert prunes_exactly(BranchesOnSizes(), x) == 1
    assert build_dependency_graph(BranchesOnData(), x[:1]).tracer == "eager"


class BranchesOnWidths(nn.Module):
    """Branches on channel counts: a pruned model would take the other branch, so those widths stay whole."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.c, self.e = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 6, 1), nn.Conv2d(3, 4, 1)
        self.b, self.d, self.f = nn.Conv2d(8, 4, 1), nn.Conv2d(6, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, z, w = self.a(x), self.c(x), self.e(x)
        if y.shape[1] == 8:  # read as shape[k]
            y = y * 2
        if z.size(1) // 2 > 1:  # computed from size(k)
            z = -z
        height, _ = w.shape[-2:]
        if height % 2 or w.size()[-1] % 2:  # spatial sizes (TF 'same' padding reads them so): no channel is pinned
            w = w + 1
        return (self.b(y) + self.d(z)).mean((2, 3)) + self.f(w).mean((2, 3))


class ScalesByWidth(nn.Module):
    """Data scaled by a width (a mean over channels written by hand): the pruned width would rescale it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.c, self.d = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = y / y.size(1)
        z = self.c(x)
        z = z * z.shape[-1] ** -0.5  # a spatial size: no channel is pinned by it
        return self.b(y).mean((2, 3)) + self.d(z).mean((2, 3))


class BranchesOnLen(ScalesByWidth):
    """A width read by len(): fx answers it from the example's shapes (it used to fall back to eager, unseen)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = y * 2 if len(y[0]) == 8 else y
        return self.b(y).mean((2, 3)) + self.d(self.c(x)).mean((2, 3))


class AssertsWidth(ScalesByWidth):
    """torch._assert on a width: fx records the check as a call, not a branch; the width is pinned all the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        torch._assert(y.shape[1] == 8, "width")
        return self.b(y).mean((2, 3)) + self.d(self.c(x)).mean((2, 3))


@pytest.mark.parametrize("model, prunable", [(BranchesOnWidths, ["e"]), (ScalesByWidth, ["c"]), (BranchesOnLen, ["c"]),
                                             (AssertsWidth, ["c"])])
def test_a_width_the_code_reads_as_a_number_is_pinned(model, prunable):
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    g = build_dependency_graph(model(), x[:1])
    assert g.tracer == "fx" and [grp.id for grp in g.prunable_groups] == prunable
    assert prunes_exactly(model(), x) == 1


class CachesByDevice(nn.Module):
    """LeViT's eval-mode attention-bias cache, keyed by the input's device (a proxy while fx traces)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)
        self.bias = nn.Parameter(torch.randn(8, 1, 1))
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = str(x.device)
        if key not in self.cache:
            self.cache[key] = self.bias * 2
        y = self.conv(x)
        if not self.training and "stat" not in self._buffers:  # a statistic registered lazily, once
            self.register_buffer("stat", y.mean((0, 2, 3)))
        return self.head(y + self.cache[key])


class ReadsWidthsEagerly(ScalesByWidth):
    """A branch on data sends the trace to the eager tracer, where sizes reach the code as plain numbers: the widths
    it reads (x.size(k), len(x), x.shape: every dim) are kept; a tensor whose shape is never read prunes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = y / y.size(1)
        z = self.c(x) if x.mean() > 0 else -self.c(x)  # a branch on data (the input's): fx cannot follow it
        return self.b(y).mean((2, 3)) + self.d(z).mean((2, 3))


def test_the_eager_tracer_keeps_the_widths_the_code_reads():
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    g = build_dependency_graph(ReadsWidthsEagerly(), x[:1])
    assert g.tracer == "eager" and [grp.id for grp in g.prunable_groups] == ["c"]
    assert prunes_exactly(ReadsWidthsEagerly(), x) == 1


def test_a_trace_leaves_no_traced_value_in_the_model():
    model, x = CachesByDevice().eval(), torch.randn(1, 3, 4, 4)
    for _ in range(2):  # the second build used to read the first trace's cached proxy and fall back to eager
        assert build_dependency_graph(model, x).tracer == "fx"
        assert model.cache == {} and "stat" not in model._buffers
    model(x)
    assert list(model.cache) == ["cpu"] and not model.cache["cpu"].is_meta
    assert model.stat.shape == (8,) and not model.stat.is_meta


class ScaledByAttribute(nn.Module):
    """A plain tensor attribute (not a buffer) used in forward, and a class defining nothing of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        self.scale = torch.linspace(0.5, 1.5, 8).view(1, 8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x) * self.scale)


class OwnCall(nn.Sequential):
    """A container with its own `__call__`: fx's own trace (the lean one patches only plain modules' classes)."""

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return super().__call__(*args, **kwargs)


def test_the_lean_fx_trace_restores_every_class_and_matches_fxs_own():
    from iee_deploy.graph import trace as trace_module

    classes = (ScaledByAttribute, nn.Conv2d, nn.Module, OwnCall, nn.Sequential)
    before = {c: {k: c.__dict__.get(k) for k in ("__call__", "__getattr__")} for c in classes}
    model, x = ScaledByAttribute().eval(), torch.randn(1, 3, 6, 6)
    lean = build_dependency_graph(model, x)
    assert lean.tracer == "fx" and {c: {k: c.__dict__.get(k) for k in ("__call__", "__getattr__")} for c in classes} == before
    assert set(vars(model)) == set(vars(ScaledByAttribute())) and torch.fx.symbolic_trace(model)(x).shape == (1, 2, 6, 6)
    trace_module._LEAN_TRACE = False
    try:  # fx's own trace gives the same groups
        assert [g.to_dict() for g in build_dependency_graph(model, x).groups] == [g.to_dict() for g in lean.groups]
    finally:
        trace_module._LEAN_TRACE = True
    own = OwnCall(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    assert build_dependency_graph(own, x).tracer == "fx" and "__call__" in OwnCall.__dict__


def test_prune_model_names_a_wrong_keep_graph_or_model_in_one_line():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    g = build_dependency_graph(model, torch.zeros(1, 3, 8, 8))
    for keep, match in (([0, 1], "`keep` must map group ids"), (None, "`keep` must map group ids"),
                        ({"0": "all"}, "whole unit indices"), ({"0": [0.5]}, "whole unit indices"),
                        ({"0": torch.tensor([True, False, True, False])}, "a boolean mask")):
        with pytest.raises(UserError, match=match):
            prune_model(model, g, keep)
    with pytest.raises(UserError, match="`g` must be the model's DependencyGraph"):
        prune_model(model, None, {})
    with pytest.raises(UserError, match="`model` must be a torch.nn.Module"):
        prune_model("GN", g, {})
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    for fn in (prune_model, mask_model):
        with pytest.raises(UserError, match="does not match `model`: it has no layer '2'"):
            fn(other, g, {"0": [0, 1]})
    assert prune_model(model, g, {"0": np.array([0, 2])})[0].out_channels == 2  # numpy indices are fine
    with pytest.raises(UserError, match="`model` is a TorchScript module"):
        prune_model(torch.jit.script(model), g, {"0": [0, 1]})
    with pytest.raises(UserError, match="`model` Sequential holds no parameters, so no layer to prune"):
        build_dependency_graph(nn.Sequential(), torch.zeros(1, 3, 8, 8))
    with pytest.raises(UserError, match="must be one list of unit indices, got an array of shape \\(2, 2\\)"):
        prune_model(model, g, {"0": torch.tensor([[0, 1], [2, 3]])})
    mask = torch.tensor([True, False, True, False])
    assert prune_model(model, g, {"0": mask.nonzero()})[0].out_channels == 2  # the advice's (K, 1) indices
    wider = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()  # the same names, another width
    with pytest.raises(UserError, match="its layer '0' is 3 -> 4 channels, the model's 3 -> 6"):
        prune_model(wider, g, {"0": [0, 1]})
