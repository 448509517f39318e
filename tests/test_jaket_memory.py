"""Entity context memory: refresh schedule, momentum, position-1 rule, span pooling, token cache, save/load."""

from __future__ import annotations

import pytest
import torch

from jaket.lm import LanguageModule, load_tokenizer
from jaket.memory import EntityMemory, RefreshSchedule, encode_descriptions, length_buckets, pool_mentions
from jaket.tokens import cache_dir, cached_tokenize, char_to_token_spans, tokenize_descriptions

pytest_plugins = ["tests.jaket_fixtures"]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_refresh_schedule_doubles_every_three_and_caps():
    s = RefreshSchedule()
    got = [s.interval(i) for i in range(30)]
    assert got[:9] == [10, 10, 10, 20, 20, 20, 40, 40, 40]
    assert got[9:15] == [80, 80, 80, 160, 160, 160]
    assert got[15:18] == [320, 320, 320]
    assert set(got[18:]) == {500}                    # 640 capped at I_max
    assert RefreshSchedule(init=5, growth=3, every=2, max=100).interval(3) == 15


def test_refresh_steps_follow_the_schedule():
    mem = EntityMemory(torch.zeros(3, 2), torch.zeros(1, 2))
    steps = []
    for step in range(200):
        if mem.due(step):
            steps.append(step)
            mem.refreshes += 1
            mem.last_refresh = step
    assert steps == [10, 20, 30, 50, 70, 90, 130, 170]


def test_momentum_update():
    old = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    new = torch.tensor([[11.0, 12.0], [13.0, 14.0]])
    mem = EntityMemory(old.clone(), torch.zeros(1, 2), RefreshSchedule(momentum=0.8))
    mem.momentum_update(new)
    assert torch.allclose(mem.entity, 0.8 * old + 0.2 * new)


def test_pool_is_mean_of_first_and_last_token():
    z = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    spans = torch.tensor([[1, 3], [0, 0]])
    got = pool_mentions(z, spans)
    assert torch.equal(got[0], (z[0, 1] + z[0, 3]) / 2)
    assert torch.equal(got[1], z[1, 0])


def test_position_one_rule(tiny_bert):
    tok = load_tokenizer(tiny_bert)
    rows = [(0, "The Sun is the star at the center of the Solar System", 4, 7),   # Sun -> token 2 ([CLS]=0)
            (1, "a star at the center of the Solar System", None, None),         # no mention -> [CLS]
            (2, "Solar System", 0, 12),
            (3, "word " * 40 + "Sun", 200, 203)]                                  # cut by truncation -> [CLS]
    t = tokenize_descriptions(tok, rows, max_len=16)
    assert t.spans.tolist() == [[2, 2], [0, 0], [1, 2], [0, 0]]
    lm = LanguageModule.from_pretrained(tiny_bert).eval()
    e0 = encode_descriptions(lm, t, pad_id=tok.pad_token_id)
    ids, mask, _ = t.batch(torch.tensor([1]), tok.pad_token_id)
    with torch.no_grad():
        z = lm.run_lm1(ids, mask)
    assert torch.allclose(e0[1], z[0, 0], atol=1e-5)                              # the [CLS] state


def test_char_to_token_spans_overlap_rules():
    offsets = [(0, 0), (0, 3), (4, 7), (7, 9), (10, 12), (0, 0)]
    got = char_to_token_spans(offsets, [(4, 9), (5, 6), (0, 12), (13, 15)])
    assert got.tolist() == [[2, 3], [2, 2], [1, 4], [-1, -1]]


def test_length_bucketed_build_equals_per_text_forward(tiny_bert, tiny_store):
    from kg_store.store import KGStore

    tok = load_tokenizer(tiny_bert)
    lm = LanguageModule.from_pretrained(tiny_bert).eval()
    with KGStore(tiny_store) as store:
        t = cached_tokenize(store.path, "entity", tok, store.entity_descriptions(), 32)
    assert any(length_buckets(t.lengths(), 64)[i].numel() > 1 for i in range(3))
    fast = encode_descriptions(lm, t, pad_id=tok.pad_token_id, batch_tokens=64)
    for i in (0, 17, 49):
        ids, mask, span = t.batch(torch.tensor([i]), tok.pad_token_id)
        with torch.no_grad():
            ref = pool_mentions(lm.run_lm1(ids, mask), span)[0]
        assert torch.allclose(fast[i], ref, atol=1e-5)


def test_token_cache_is_reused_and_keyed_by_content(tiny_bert, tmp_path):
    tok = load_tokenizer(tiny_bert)
    store = tmp_path / "s.duckdb"
    rows = [(0, "Paris is a city", 0, 5), (1, "France", 0, 6)]
    a = cached_tokenize(store, "entity", tok, rows, 16)
    files = list(cache_dir(store).glob("*.safetensors"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = cached_tokenize(store, "entity", tok, rows, 16)
    assert files[0].stat().st_mtime_ns == mtime and torch.equal(a.ids, b.ids) and torch.equal(a.spans, b.spans)
    c = cached_tokenize(store, "entity", tok, [(0, "Lyon is a city", 0, 4), (1, "France", 0, 6)], 16)
    assert not torch.equal(a.ids, c.ids)                    # changed descriptions -> re-tokenized


def test_memory_save_load_roundtrip(tmp_path):
    mem = EntityMemory(torch.randn(4, 3), torch.randn(2, 3), RefreshSchedule(init=7), refreshes=5, last_refresh=123)
    mem.save(tmp_path / "m.safetensors")
    back = EntityMemory.load(tmp_path / "m.safetensors")
    assert torch.equal(back.entity, mem.entity) and torch.equal(back.relation, mem.relation)
    assert (back.refreshes, back.last_refresh, back.schedule.init) == (5, 123, 7)
    assert back.next_refresh == mem.next_refresh


def test_memory_build_cache_is_keyed_by_lm1_weights(tiny_bert, tiny_store, tmp_path):
    from kg_store.store import KGStore

    tok = load_tokenizer(tiny_bert)
    lm = LanguageModule.from_pretrained(tiny_bert).eval()
    with KGStore(tiny_store) as store:
        ent = cached_tokenize(store.path, "entity", tok, store.entity_descriptions(), 32)
    rel = tokenize_descriptions(tok, [(0, "capital of, a city", 0, 10)], 32)
    a = EntityMemory.build_cached(tmp_path, lm, ent, rel, tok.pad_token_id, progress=False)
    assert len(list(tmp_path.glob("memory-*.safetensors"))) == 1
    b = EntityMemory.build_cached(tmp_path, lm, ent, rel, tok.pad_token_id, progress=False)
    assert torch.equal(a.entity, b.entity) and b.refreshes == 0
    with torch.no_grad():
        lm.lm1[0].output.dense.weight.add_(0.1)            # a trained LM1 is another build
    c = EntityMemory.build_cached(tmp_path, lm, ent, rel, tok.pad_token_id, progress=False)
    assert len(list(tmp_path.glob("memory-*.safetensors"))) == 2 and not torch.allclose(a.entity, c.entity)
