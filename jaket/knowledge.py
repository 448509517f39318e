"""The knowledge module (KM): an L-layer relational GAT over a (sampled) subgraph (DESIGN.md part 1).

Edges follow PyG's convention: edge_index[0] = source u (the neighbour), edge_index[1] = target v, so the
softmax over `index = edge_index[1]` is the softmax over N_v.

Inverse edges (our choice): the store's `csr(add_inverse=True)` adds t -> h for every triple (h, r, t).
We use them, because a Wikidata entity is often only a tail (a country, a class, an occupation) and would
otherwise receive no message at all, and because sampled neighbourhoods then grow in both directions.
An inverse edge carries its own relation embedding R_{r^-1} = R_r W_inv (one learned F x F matrix shared by
all relations, initialised to -I: TransE's h + r = t gives t + (-r) = h). Being a function of R_r, it exists
for the relations of an unseen KG too. Edge types: r for a forward edge, r + P for its inverse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


class RelationalGATLayer(MessagePassing):
    """One KM layer: E_v^(l) = LayerNorm(concat_k sigma(sum_{(r,u) in N_v} alpha^k W^k M_{u,r}) + E_v^(l-1))."""

    def __init__(self, hidden: int, heads: int = 4, negative_slope: float = 0.2, dropout: float = 0.0) -> None:
        super().__init__(aggr="add", node_dim=0)
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.hidden, self.heads, self.head_dim = hidden, heads, hidden // heads
        self.negative_slope, self.dropout = negative_slope, dropout
        self.lin = nn.Linear(hidden, hidden, bias=False)           # W^k for all heads, stacked
        self.att_v = nn.Parameter(torch.empty(heads, self.head_dim))  # first half of a_k (applied to W^k E_v)
        self.att_m = nn.Parameter(torch.empty(heads, self.head_dim))  # second half of a_k (applied to W^k M)
        self.norm = nn.LayerNorm(hidden)
        self._alpha: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_v)
        nn.init.xavier_uniform_(self.att_m)
        self.norm.reset_parameters()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                relation_table: torch.Tensor, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n = x.size(0)
        wx = self.lin(x).view(n, self.heads, self.head_dim)                       # W^k E  (per node)
        wr = self.lin(relation_table).view(-1, self.heads, self.head_dim)         # W^k R  (per relation)
        agg = self.propagate(edge_index, wx=wx, wr_e=wr[edge_type], size=(n, n))  # [n, K, D]
        out = F.elu(agg).reshape(n, self.hidden)        # m_v^k = sigma(sum alpha^k W^k M_{u,r}), heads concatenated
        out = self.norm(out + x)                        # E_v^(l) = LayerNorm(concat_k m_v^k + E_v^(l-1))
        alpha, self._alpha = self._alpha, None
        return (out, alpha) if return_attention else out

    def message(self, wx_i: torch.Tensor, wx_j: torch.Tensor, wr_e: torch.Tensor, index: torch.Tensor,
                ptr: torch.Tensor | None, size_i: int | None) -> torch.Tensor:
        wm = wx_j + wr_e                                # W^k M_{u,r} = W^k (E_u + R_r)   (W is linear)
        score = (wx_i * self.att_v).sum(-1) + (wm * self.att_m).sum(-1)   # S = a_k^T [W^k E_v (+) W^k M_{u,r}]
        alpha = softmax(F.leaky_relu(score, self.negative_slope), index, ptr, size_i)  # softmax_{N_v} LeakyReLU(S)
        self._alpha = alpha
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return wm * alpha.unsqueeze(-1)                 # alpha^k W^k M_{u,r}


class KnowledgeModule(nn.Module):
    """L relational GAT layers sharing one relation table R (P x F, initialised from relation descriptions)."""

    def __init__(self, hidden: int, num_relations: int, layers: int = 2, heads: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_relations = num_relations
        self.relation = nn.Parameter(torch.randn(max(num_relations, 1), hidden) * 0.02)  # R, shared by all layers
        self.inverse = nn.Linear(hidden, hidden, bias=False)    # R_{r^-1} = R_r W_inv
        with torch.no_grad():
            self.inverse.weight.copy_(-torch.eye(hidden))
        self.layers = nn.ModuleList(RelationalGATLayer(hidden, heads, dropout=dropout) for _ in range(layers))

    def relation_table(self) -> torch.Tensor:
        """[2P, F]: rows 0..P-1 = R_r (forward edges), rows P..2P-1 = R_{r^-1} (inverse edges)."""
        return torch.cat([self.relation, self.inverse(self.relation)], dim=0)

    @torch.no_grad()
    def set_relations(self, relation_embeddings: torch.Tensor) -> None:
        """Replace R, e.g. by LM1 encodings of relation descriptions (a new KG may have another P)."""
        self.num_relations = relation_embeddings.size(0)
        self.relation = nn.Parameter(relation_embeddings.detach().clone().to(self.relation.device))

    def forward(self, e0: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
        """E^KM = the last layer's output, starting from E^(0)."""
        table = self.relation_table()
        h = e0
        for layer in self.layers:
            h = layer(h, edge_index, edge_type, table)
        return h
