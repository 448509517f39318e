"""LM split, merge, gradient paths (text, description at refresh, KM, relations, g), RoBERTa family."""

from __future__ import annotations

import pytest
import torch

from jaket.lm import LanguageModule, load_tokenizer
from jaket.losses import LossWeights
from jaket.memory import EntityMemory
from jaket.model import JAKETConfig, JAKETModel, merge_mentions
from jaket.pretrain import Pretrainer, TrainConfig
from jaket.tokens import cached_tokenize, relation_rows

pytest_plugins = ["tests.jaket_fixtures"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_lm1_then_lm2_is_the_whole_encoder(family, request):
    path = request.getfixturevalue(f"tiny_{family}")
    tok = load_tokenizer(path)
    for k in (None, 1, 3):
        lm = LanguageModule.from_pretrained(path, k).eval()
        assert len(lm.lm1) == (2 if k is None else k) and len(lm.lm1) + len(lm.lm2) == 4
        enc = tok(["Paris is a city in France.", "Oslo"], padding=True, return_tensors="pt")
        with torch.no_grad():
            ours = lm.run_lm2(lm.run_lm1(enc["input_ids"], enc["attention_mask"]), enc["attention_mask"])
            ref = lm.masked_lm.base_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        m = enc["attention_mask"].bool()
        assert torch.allclose(ours[m], ref.last_hidden_state[m], atol=1e-5)
    # the MLM head is tied to the word embeddings
    assert lm.masked_lm.get_output_embeddings().weight is lm.word_embeddings.weight


def test_merge_touches_exactly_the_mention_tokens():
    torch.manual_seed(0)
    z = torch.randn(2, 10, 4)
    spans = torch.tensor([[0, 1, 3], [0, 6, 6], [1, 2, 5]])
    emb = torch.randn(3, 4)
    out = merge_mentions(z, spans, emb)
    changed = (out != z).any(-1)
    expected = torch.zeros(2, 10, dtype=torch.bool)
    expected[0, 1:4] = expected[0, 6] = expected[1, 2:6] = True
    assert torch.equal(changed, expected)
    assert torch.allclose(out[0, 2], z[0, 2] + emb[0]) and torch.allclose(out[1, 5], z[1, 5] + emb[2])


def test_dropped_mentions_get_no_km_embedding(tiny_bert):
    model = JAKETModel.from_lm(JAKETConfig(lm=str(tiny_bert), num_relations=2, num_categories=2)).eval()
    ids = torch.randint(1000, 2000, (1, 8))
    mask = torch.ones_like(ids)
    spans, nodes = torch.tensor([[0, 1, 2], [0, 4, 5]]), torch.tensor([0, 1])
    e0 = torch.randn(2, model.hidden_size)
    ei, et = torch.zeros((2, 0), dtype=torch.long), torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        out = model(ids, mask, spans, nodes, e0, ei, et, mention_keep=torch.tensor([True, False]))
        plain = model.merge_norm(out.lm1_hidden_state)
    differs = (out.merged_hidden_state - plain).abs().amax(-1)[0] > 1e-6
    assert differs.tolist() == [False, True, True, False, False, False, False, False]


def _trainer(tiny_bert, tiny_store, **kw) -> Pretrainer:
    from kg_store.store import KGStore

    torch.manual_seed(0)
    store = KGStore(tiny_store)
    tok = load_tokenizer(tiny_bert)
    c = store.counts()
    mcfg = JAKETConfig(lm=str(tiny_bert), num_entities=c["entities"], num_relations=c["relations"],
                       num_categories=c["categories"])
    model = JAKETModel.from_lm(mcfg)
    ent = cached_tokenize(store.path, "entity", tok, store.entity_descriptions(), 32)
    rel = cached_tokenize(store.path, "relation", tok, relation_rows(store), 32)
    memory = EntityMemory.build(model.lm, ent, rel, tok.pad_token_id, progress=False)
    model.km.set_relations(memory.relation)
    return Pretrainer(model.train(), tok, store, memory, ent, TrainConfig(**kw))


def _lm1_grad(model: JAKETModel) -> float:
    params = list(model.lm.embeddings.parameters()) + list(model.lm.lm1.parameters())
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def test_gradients_reach_lm1_through_text_and_description_paths(tiny_bert, tiny_store):
    # KG losses only: LM1 gets gradient only at a refresh step (through the descriptions)
    tr = _trainer(tiny_bert, tiny_store, weights=LossWeights(category=1, relation=1, token=0, entity=0))
    total, _, info = tr.losses(step=3)
    assert not info["refresh"]
    total.backward()
    assert _lm1_grad(tr.model) == 0.0
    tr.model.zero_grad()
    refreshes = tr.memory.refreshes
    total, _, info = tr.losses(step=tr.memory.next_refresh)
    assert info["refresh"] and tr.memory.refreshes == refreshes + 1
    total.backward()
    assert _lm1_grad(tr.model) > 0.0
    # ... but not with --desc-grad never
    tr.cfg.desc_grad = "never"
    tr.model.zero_grad()
    total, _, info = tr.losses(step=tr.memory.next_refresh)
    assert info["refresh"]
    total.backward()
    assert _lm1_grad(tr.model) == 0.0
    # text losses: LM1 gets gradient at every step (the text path)
    tr.cfg.weights = LossWeights(category=0, relation=0, token=1, entity=1)
    tr.model.zero_grad()
    total, _, info = tr.losses(step=tr.memory.last_refresh + 1)
    assert not info["refresh"]
    total.backward()
    assert _lm1_grad(tr.model) > 0.0


def test_gradients_reach_km_relations_g_and_lm2(tiny_bert, tiny_store):
    tr = _trainer(tiny_bert, tiny_store)
    total, logged, _ = tr.losses(step=1)
    assert all(v is not None for v in logged.values()), logged
    total.backward()
    m = tr.model

    def nz(params) -> bool:
        return all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)

    assert nz(m.km.layers.parameters())
    assert nz([m.km.relation]) and nz(m.km.inverse.parameters())
    assert nz([m.heads.g1.weight, m.heads.g2.weight])
    assert nz(m.heads.category.parameters()) and nz(m.heads.relation.parameters())
    assert nz(m.lm.lm2.parameters()) and nz(m.merge_norm.parameters())


def test_onthefly_e0_matches_memory_in_eval_mode(tiny_bert, tiny_store):
    from jaket.memory import encode_descriptions

    tr = _trainer(tiny_bert, tiny_store)
    tr.model.eval()
    idx = torch.tensor([4, 0, 33, 12])
    fresh = encode_descriptions(tr.model.lm, tr.entity_tokens, idx, tr.pad_id, grad=True)
    assert fresh.requires_grad
    assert torch.allclose(fresh, tr.memory.entity[idx], atol=1e-5)
