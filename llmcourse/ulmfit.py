"""ULMFiT: an LSTM language model, pretrained, fine-tuned on the target text, then made a classifier.

Paper: Howard and Ruder (2018), "Universal Language Model Fine-tuning for Text
Classification", arXiv:1801.06146. Section 3: three stages (general-domain LM pretraining,
target-task LM fine-tuning, target-task classifier fine-tuning); section 3.2:
discriminative fine-tuning (equation 2, η^{l-1} = η^l / 2.6) and slanted triangular
learning rates (equation 3, cut_frac 0.1, ratio 32); section 3.3: concat pooling
(equation 4), two linear blocks with batch normalisation and dropout, gradual unfreezing.

The language model follows AWD-LSTM (Merity, Keskar, Socher 2017, arXiv:1708.02182), the
paper's model, in miniature: three LSTM layers, the last as wide as the embedding so that
the output layer is tied to it, and variational ("locked") dropout, one mask per sequence,
between layers. Not kept: AWD-LSTM's DropConnect on the hidden-to-hidden weights, embedding
dropout and its NT-ASGD optimiser (we pretrain with the course's AdamW loop,
:func:`llmcourse.train.train_lm`). The model reads characters, not words.

:class:`LSTMLayer` computes the LSTM equations step by step (``fused=False``) or calls
PyTorch's ``nn.LSTM`` kernel on the same parameters (``fused=True``, the default: same
numbers, several times faster). ``tests/test_ulmfit.py`` checks the equations against
``nn.LSTM`` with copied weights, and the schedules against the paper's formulas.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------- the LSTM


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
              b_ih: torch.Tensor, b_hh: torch.Tensor):
    """One LSTM step (Hochreiter and Schmidhuber 1997, with a forget gate), nn.LSTM's gate order i, f, g, o.

    x (B, I), h and c (B, H); w_ih (4H, I), w_hh (4H, H), b_ih and b_hh (4H,). Returns (h, c).
    """
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh               # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    c = f * c + i * torch.tanh(g)                                # forget some memory, write some new
    h = o * torch.tanh(c)                                        # read it out
    return h, c


class LSTMLayer(nn.Module):
    """One LSTM layer over a batch of sequences, with ``nn.LSTM``'s parameters (``self.lstm``)."""

    def __init__(self, input_size: int, hidden_size: int, fused: bool = True):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.fused = fused

    def forward(self, x: torch.Tensor, state=None):
        """x (B, T, I) -> (outputs (B, T, H), (h, c) each (B, H)); ``state`` (h, c) or None (zeros)."""
        if self.fused:
            if state is not None:
                state = (state[0][None], state[1][None])
            out, (h, c) = self.lstm(x, state)
            return out, (h[0], c[0])
        lstm = self.lstm
        B, H = x.size(0), lstm.hidden_size
        h, c = state if state is not None else (x.new_zeros(B, H), x.new_zeros(B, H))
        outs = []
        for t in range(x.size(1)):                               # the recurrence: one step at a time
            h, c = lstm_cell(x[:, t], h, c, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout (Gal and Ghahramani 2016; AWD-LSTM): one mask per sequence, the same at every step."""
    if not training or p == 0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - p) / (1 - p)   # (B, 1, D)
    return x * mask


@dataclass
class LSTMConfig:
    """Shape of an :class:`LSTMLM` (AWD-LSTM: 400, 1150, 3 layers; ours is far smaller)."""

    vocab_size: int = 78          #: distinct characters
    emb: int = 64                 #: embedding width, also the last layer's width (tied output layer)
    hidden: int = 256             #: width of the inner LSTM layers
    n_layers: int = 3             #: LSTM layers
    dropout: float = 0.1          #: locked dropout on the embedding, between layers and on the output
    fused: bool = True            #: nn.LSTM's kernel (False: the equations, step by step)


class LSTMLM(nn.Module):
    """Character embedding, ``n_layers`` LSTM layers, a read-out tied to the embedding.

    ``forward(idx, targets)`` returns ``(logits, loss)`` like :class:`llmcourse.gpt.GPT`, so
    :func:`llmcourse.train.train_lm` pretrains it unchanged.
    """

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg.emb] + [cfg.hidden] * (cfg.n_layers - 1) + [cfg.emb]
        self.embed = nn.Embedding(cfg.vocab_size, cfg.emb)
        self.layers = nn.ModuleList(LSTMLayer(sizes[i], sizes[i + 1], cfg.fused) for i in range(cfg.n_layers))
        self.head = nn.Linear(cfg.emb, cfg.vocab_size)
        self.head.weight = self.embed.weight                     # tied, as AWD-LSTM
        # The embedding keeps nn.Embedding's N(0, 1) start: with AWD-LSTM's U(-0.1, 0.1), made for
        # 400-wide word vectors, our three-layer stack sat at the unigram loss for hundreds of steps.

    def set_fused(self, fused: bool) -> "LSTMLM":
        for layer in self.layers:
            layer.fused = fused
        return self

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> the last layer's outputs (B, T, emb), the sequence's summary at every step."""
        x = locked_dropout(self.embed(idx), self.cfg.dropout, self.training)
        for layer in self.layers:
            x, _ = layer(x)
            x = locked_dropout(x, self.cfg.dropout, self.training)
        return x

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) -> (logits (B, T, vocab), mean cross-entropy of the next characters or None)."""
        logits = self.head(self.features(idx))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from the bottom up: the embedding (and the tied read-out), then each LSTM layer."""
        return [[self.embed.weight, self.head.bias]] + [list(layer.parameters()) for layer in self.layers]

    def checkpoint(self) -> dict:
        return {"config": asdict(self.cfg), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "LSTMLM":
        model = cls(LSTMConfig(**ckpt["config"]))
        model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
        return model


PRETRAINED_FILE = "lstm_shakespeare.pt"


def load_pretrained_lstm(path=None):
    """Chapter 5's pretrained LSTM language model and its tokenizer: ``(model, tokenizer, info)``.

    Made by ``scripts/pretrain_lstm.py`` on the same text as the course's GPT (``path``: another
    checkpoint of that script); ``info`` holds the settings, the validation loss and the
    zero-shot scores measured during training.
    """
    from pathlib import Path

    from .data import data_path
    from .tokenizer import CharTokenizer

    with (data_path(PRETRAINED_FILE) if path is None else Path(path)).open("rb") as f:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
    return LSTMLM.from_checkpoint(ckpt).eval(), CharTokenizer(ckpt["chars"]), ckpt.get("info", {})


# ----------------------------------------------------------------------------- the paper's schedules


def slanted_triangular(t: int, T: int, lr_max: float, cut_frac: float = 0.1, ratio: float = 32) -> float:
    """Slanted triangular learning rate at iteration ``t`` of ``T`` (equation 3).

    cut = ⌊T·cut_frac⌋; p = t/cut before it, 1 − (t − cut)/(cut·(1/cut_frac − 1)) after;
    η_t = η_max·(1 + p·(ratio − 1))/ratio: a short linear rise from η_max/ratio to η_max at
    ``cut``, then a long linear decay back to η_max/ratio at ``T``.
    """
    cut = max(1, math.floor(T * cut_frac))
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return lr_max * (1 + p * (ratio - 1)) / ratio


def discriminative_lrs(lr_top: float, n_groups: int, factor: float = 2.6) -> list[float]:
    """Equation 2's rates, from the bottom group up: η^{l-1} = η^l / factor, the top group at ``lr_top``."""
    return [lr_top / factor ** (n_groups - 1 - l) for l in range(n_groups)]


def unfrozen_groups(step: int, steps_per_stage: int, n_groups: int) -> int:
    """Gradual unfreezing: how many groups, counted from the top, train at ``step``.

    The top group (the new classifier) alone for the first ``steps_per_stage`` steps, then
    one more group below it every ``steps_per_stage`` steps, until all train.
    ``steps_per_stage`` 0 means no unfreezing schedule: every group trains from the start.
    """
    if steps_per_stage <= 0:
        return n_groups
    return min(n_groups, 1 + step // steps_per_stage)


# ----------------------------------------------------------------------------- the classifier


class LSTMClassifier(nn.Module):
    """The pretrained LSTM with ULMFiT's head: concat pooling, two linear blocks (section 3.3).

    h_c = [h_T, maxpool(H), meanpool(H)] over the last layer's outputs H = {h_1, ..., h_T}
    (equation 4), then BatchNorm, dropout, Linear(3·emb, hidden), ReLU, BatchNorm,
    dropout, Linear(hidden, n_classes). Follows :mod:`llmcourse.classify`'s interface.
    """

    def __init__(self, lm: LSTMLM, n_classes: int, hidden: int = 50, dropout: float = 0.1):
        super().__init__()
        self.lm = lm
        d = 3 * lm.cfg.emb
        self.head = nn.Sequential(nn.BatchNorm1d(d), nn.Dropout(dropout), nn.Linear(d, hidden), nn.ReLU(),
                                  nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def pool(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> h_c (B, 3·emb): the last step's output, the maximum and the mean over steps."""
        H = self.lm.features(idx)                                # (B, T, emb)
        return torch.cat([H[:, -1], H.max(dim=1).values, H.mean(dim=1)], dim=-1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) character ids -> class logits (B, n_classes)."""
        return self.head(self.pool(idx))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Bottom up: embedding, each LSTM layer, the new head (the group gradual unfreezing starts with)."""
        groups = self.lm.layer_groups()
        groups[0] = [self.lm.embed.weight]                       # the LM's read-out bias is not used here
        return groups + [list(self.head.parameters())]

    def lm_loss(self, idx: torch.Tensor) -> torch.Tensor:
        """The language model's own loss on the same text: next-character cross-entropy."""
        return self.lm(idx[:, :-1], idx[:, 1:])[1]
