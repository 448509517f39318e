"""The relational GAT layer and the knowledge module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jaket.knowledge import KnowledgeModule, RelationalGATLayer

pytest_plugins = ["tests.jaket_fixtures"]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_attention_sums_to_one_over_each_neighbourhood():
    torch.manual_seed(0)
    layer = RelationalGATLayer(16, heads=4)
    n, e = 12, 60
    src, dst = torch.randint(n, (e,)), torch.randint(n, (e,))
    rel = torch.randn(5, 16)
    _, alpha = layer(torch.randn(n, 16), torch.stack([src, dst]), torch.randint(5, (e,)), rel,
                     return_attention=True)
    assert alpha.shape == (e, 4)
    sums = torch.zeros(n, 4).index_add_(0, dst, alpha)
    has = torch.bincount(dst, minlength=n) > 0
    assert torch.allclose(sums[has], torch.ones(int(has.sum()), 4), atol=1e-6)
    assert (alpha > 0).all()


def test_three_node_example_by_hand():
    """v = node 0 with neighbours (r0, u=1) and (r1, u=2); one head, W = I, hidden 2."""
    layer = RelationalGATLayer(2, heads=1, negative_slope=0.2)
    with torch.no_grad():
        layer.lin.weight.copy_(torch.eye(2))
        layer.att_v.copy_(torch.tensor([[0.5, -1.0]]))
        layer.att_m.copy_(torch.tensor([[1.0, 0.25]]))
    e = torch.tensor([[1.0, 2.0], [0.0, 1.0], [-1.0, 3.0]])
    r = torch.tensor([[0.5, 0.5], [2.0, -4.0]])
    edge_index = torch.tensor([[1, 2], [0, 0]])        # u -> v
    out, alpha = layer(e, edge_index, torch.tensor([0, 1]), r, return_attention=True)
    # by hand: M_1 = E_1 + R_0 = (0.5, 1.5); M_2 = E_2 + R_1 = (1.0, -1.0)
    # a^T[E_0 (+) M] = 0.5*1 - 1*2 + (1*m0 + 0.25*m1): S_1 = -1.5 + 0.875 = -0.625 ; S_2 = -1.5 + 0.75 = -0.75
    s1, s2 = 0.2 * -0.625, 0.2 * -0.75                  # LeakyReLU of negatives
    a1 = math.exp(s1) / (math.exp(s1) + math.exp(s2))
    assert torch.allclose(alpha[:, 0], torch.tensor([a1, 1 - a1]), atol=1e-6)
    msg = torch.tensor([a1 * 0.5 + (1 - a1) * 1.0, a1 * 1.5 + (1 - a1) * -1.0])
    expected0 = F.layer_norm(F.elu(msg) + e[0], (2,))
    assert torch.allclose(out[0], expected0, atol=1e-5)
    # nodes without incoming edges: m = sigma(0) = 0 -> LayerNorm(E)
    assert torch.allclose(out[1], F.layer_norm(e[1], (2,)), atol=1e-5)


def test_multi_head_is_concatenation_of_heads():
    torch.manual_seed(1)
    layer = RelationalGATLayer(8, heads=2)
    x, rel = torch.randn(4, 8), torch.randn(2, 8)
    ei, et = torch.tensor([[1, 2, 3], [0, 0, 1]]), torch.tensor([0, 1, 1])
    _, alpha = layer(x, ei, et, rel, return_attention=True)
    assert not torch.allclose(alpha[:, 0], alpha[:, 1])           # heads attend independently


def test_km_shares_relations_and_inverse_starts_as_negation():
    km = KnowledgeModule(8, num_relations=3, layers=3, heads=2)
    table = km.relation_table()
    assert table.shape == (6, 8)
    assert torch.allclose(table[3:], -table[:3])
    x = torch.randn(5, 8, requires_grad=True)
    out = km(x, torch.tensor([[1, 2, 0], [0, 0, 3]]), torch.tensor([0, 4, 2]))
    (out * torch.randn_like(out)).sum().backward()
    assert km.relation.grad is not None and km.relation.grad.abs().sum() > 0
    assert km.inverse.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for layer in km.layers for p in layer.parameters())
