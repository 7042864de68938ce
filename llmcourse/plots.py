"""Helpers shared by the chapters: attention heatmaps, loss curves, and ``glue``.

Each function draws on a given ``ax`` (or a new figure) and returns the axes, so a
chapter can compose them into grids.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def glue(name: str, value, display: bool = False):
    """MyST-NB's ``glue`` with numpy scalars and one-element tensors passed as Python numbers.

    numpy 2 prints ``np.float64(0.5)``, which a ``{glue:text}`name:.2f``` format spec cannot
    read (the strict build fails), so a chapter glues through this instead of converting
    every value by hand. Anything else (figures, strings, Python numbers) is passed as is.
    """
    from myst_nb import glue as myst_glue

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    return myst_glue(name, value, display=display)


def _new_ax(ax, figsize=(4, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_attention(weights, x_labels=None, y_labels=None, ax=None, title=None, cmap="viridis"):
    """Heatmap of one attention matrix (Lq, Lk): queries down, keys across."""
    w = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    ax = _new_ax(ax)
    im = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=max(1e-9, float(w.max())), aspect="auto")
    if x_labels is not None:
        ax.set_xticks(range(len(x_labels)), labels=list(x_labels), fontsize=7)
    if y_labels is not None:
        ax.set_yticks(range(len(y_labels)), labels=list(y_labels), fontsize=7)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title, fontsize=9)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_heads(weights, x_labels=None, y_labels=None, ncols=4, title=None):
    """One heatmap per head of weights (H, Lq, Lk); returns the figure."""
    H = weights.shape[0]
    nrows = -(-H // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h < H:
            plot_attention(weights[h], x_labels, y_labels, ax=ax, title=f"head {h}")
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def smooth(values, window: int = 25) -> np.ndarray:
    """Moving average (same length; the first points average what exists so far)."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_losses(histories: dict, ax=None, window: int = 25, xlabel: str = "step", ylabel: str = "loss"):
    """Training (smoothed, thin) and validation (markers) loss of several runs.

    ``histories`` maps a label to a :class:`llmcourse.train.History`.
    """
    ax = _new_ax(ax, figsize=(6, 4))
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        if h.train_loss:
            ax.plot(h.steps, smooth(h.train_loss, window), color=color, lw=1, alpha=0.7, label=f"{label} (train)")
        if h.val_loss:
            ax.plot(h.eval_steps, h.val_loss, "o-", color=color, ms=3, label=f"{label} (val)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
