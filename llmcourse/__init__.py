"""llmcourse: the helper package of the course "24 papers behind ChatGPT, run on a laptop".

Each module implements one idea and opens with the paper it comes from:

- :mod:`llmcourse.attention`: scaled dot-product and multi-head attention, masks.
- :mod:`llmcourse.gpt`: a decoder-only Transformer LM and the pretrained checkpoint.
- :mod:`llmcourse.tokenizer`, :mod:`llmcourse.data`: characters, the shipped text, batches.
- :mod:`llmcourse.train`: seeding, schedules, the training loop.
- :mod:`llmcourse.plots`: attention heatmaps and loss curves.
"""
from .attention import (MultiHeadAttention, causal_mask, masked_softmax, merge_heads, mlm_corrupt,
                        padding_mask, scaled_dot_product_attention, split_heads)
from .data import get_batch, load_shakespeare, shakespeare_splits
from .gpt import GPT, GPTConfig, load_pretrained
from .tokenizer import CharTokenizer
from .train import History, TrainConfig, set_seed, train_lm

__version__ = "0.1.0"

__all__ = [
    "MultiHeadAttention", "causal_mask", "masked_softmax", "merge_heads", "mlm_corrupt", "padding_mask",
    "scaled_dot_product_attention", "split_heads", "get_batch", "load_shakespeare",
    "shakespeare_splits", "GPT", "GPTConfig", "load_pretrained", "CharTokenizer",
    "History", "TrainConfig", "set_seed", "train_lm",
]
