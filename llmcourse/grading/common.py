"""What every assignment's hidden tests need, whatever the assignment.

1. :func:`call_learner` runs learner code with its stdout and stderr captured and its
   warnings silenced. nbgrader scores a test cell with *any* stderr output as failed, so a
   learner's harmless ``print`` or ``warnings.warn`` must not cost points; a real exception
   from learner code becomes an ``AssertionError`` saying "your function raised X: ...".
2. Forbidden calls: a part whose code calls the library routine that does the work
   (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``, the course's own
   ``llmcourse.attention`` / ``llmcourse.gpt``) gets no credit. Calls are seen with
   ``sys.setprofile`` ('c_call' events whose argument is a forbidden builtin, 'call'
   events whose code object is a forbidden Python function or lives in a forbidden
   module's file), so aliasing at import time does not hide them.
3. :func:`graded` makes a check deterministic (seeded, warnings off) and prints a one-line
   ``ok: ...`` when it passes.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import random
import sys
import traceback
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import guard as _guard

# ----------------------------------------------------------------------------- seeding


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Seed torch and random for the block, restore the global RNG state afterwards.

    Yields a ``torch.Generator`` seeded with ``seed`` for the check's own inputs.
    """
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.random.set_rng_state(torch_state)
        random.setstate(py_state)


def graded(what: str, seed: int = 0):
    """Decorator for a check: seeded, warnings silenced, prints ``ok: <what>`` on success."""
    def deco(check):
        @functools.wraps(check)
        def wrapper(*args, **kwargs):
            _note_earlier_tampering()
            with seeded(seed), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = check(*args, **kwargs)
            print(f"ok: {what}")
            return result
        return wrapper
    return deco


# ----------------------------------------------------------------------------- forbidden calls


@dataclass
class Forbidden:
    """What a part may not call: builtins, Python code objects, whole source files."""
    builtins: dict = field(default_factory=dict)   # builtin object -> description
    codes: dict = field(default_factory=dict)      # code object -> description
    files: dict = field(default_factory=dict)      # real path of a .py file -> description

    def __or__(self, other: "Forbidden") -> "Forbidden":
        return Forbidden({**self.builtins, **other.builtins}, {**self.codes, **other.codes},
                         {**self.files, **other.files})


def _module_file(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return os.path.realpath(spec.origin) if spec and spec.origin else None


TORCH_SDPA = Forbidden(builtins={
    F.scaled_dot_product_attention: "torch.nn.functional.scaled_dot_product_attention",
    # the private kernels behind it, in case someone finds them
    **{getattr(torch, n): f"torch.{n} (PyTorch's fused attention)" for n in dir(torch)
       if n.startswith(("_scaled_dot_product", "_triton_scaled_dot")) and callable(getattr(torch, n))}})

TORCH_MHA = Forbidden(
    builtins={getattr(torch, n): "torch.nn.MultiheadAttention's fused kernel" for n in
              ("_native_multi_head_attention", "_triton_multi_head_attention") if hasattr(torch, n)},
    codes={nn.MultiheadAttention.forward.__code__: "torch.nn.MultiheadAttention",
           F.multi_head_attention_forward.__code__: "torch.nn.functional.multi_head_attention_forward"})

LLMCOURSE = Forbidden(files={path: f"the course's own {mod}" for mod in
                             ("llmcourse.attention", "llmcourse.gpt")
                             if (path := _module_file(mod))})


class _Watcher:
    """A ``sys.setprofile`` hook that records the first call to anything forbidden."""

    def __init__(self, forbidden: Forbidden):
        self.forbidden = forbidden
        self.hits: list[str] = []
        self._file_cache: dict[str, str | None] = {}

    def _file(self, filename: str) -> str | None:
        if filename not in self._file_cache:
            real = os.path.realpath(filename) if os.path.isabs(filename) else filename
            self._file_cache[filename] = self.forbidden.files.get(real)
        return self._file_cache[filename]

    def __call__(self, frame, event, arg):
        hit = None
        if event == "c_call":
            try:
                hit = self.forbidden.builtins.get(arg)
            except TypeError:                                   # unhashable callable
                hit = None
        elif event == "call":
            code = frame.f_code
            hit = self.forbidden.codes.get(code) or self._file(code.co_filename)
        if hit and hit not in self.hits:
            self.hits.append(hit)


_GRADING_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep   # this package and its checks


def _learner_line(tb) -> str:
    """The last traceback line that is not in this package or in torch, for the message."""
    frames = [f for f in traceback.extract_tb(tb)
              if not os.path.realpath(f.filename).startswith(_GRADING_DIR)
              and f"{os.sep}torch{os.sep}" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at `{f.line}`)" if f.line else ""


def _tamper_message(what: str, found: list) -> str:
    return (f"tampering detected: while {what} ran, " + "; ".join(found[:5])
            + (f" (and {len(found) - 5} more)" if len(found) > 5 else "")
            + ". The grader put the originals back; this part gets no credit.")


def _note_earlier_tampering() -> None:
    """Print (to stdout, so it lands in the feedback) what the guard found and undid earlier."""
    for where, found in _guard.events():
        if not where.startswith("during "):
            print(f"note: tampering detected {where}: " + "; ".join(found[:5])
                  + ". It was undone before this test, which graded your code against the originals.")


def call_learner(fn, *args, what: str = "your function", forbid: Forbidden | None = None, **kwargs):
    """Call ``fn(*args, **kwargs)`` quietly; turn its exceptions and forbidden calls into failures.

    stdout and stderr are captured and warnings are silenced during the call, so a learner's
    print or warning does not make nbgrader fail the test cell. Exceptions raised by the
    learner's code are re-raised as ``AssertionError("<what> raised X: ...")``; a call to
    anything in ``forbid`` is an ``AssertionError`` that says the part gets no credit.
    """
    watcher = _Watcher(forbid or Forbidden())
    old_profile = sys.getprofile()
    tampered: list[str] = []
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sys.setprofile(watcher)
            try:
                result = fn(*args, **kwargs)
            finally:
                if sys.getprofile() is not watcher:
                    tampered.append("the profiler that watches for library calls was switched off")
                sys.setprofile(old_profile)
                tampered += _guard.check_and_restore(f"during {what}")
    except KeyboardInterrupt:
        # nbgrader interrupts a cell that runs past Execute.timeout: say so instead of a bare traceback
        raise AssertionError(f"{what} did not finish and was interrupted, probably by the grader's time "
                             f"limit per cell: is there an infinite loop?") from None
    except Exception as e:
        if tampered:
            raise AssertionError(_tamper_message(what, tampered)) from None
        hint = ""
        if isinstance(e, NotImplementedError):
            hint = " (the stub `raise NotImplementedError()` is still there: replace it with your code)"
        detail = f": {e}" if str(e) else ""
        raise AssertionError(f"{what} raised {type(e).__name__}{detail}{_learner_line(e.__traceback__)}"
                             f"{hint}") from None
    if tampered:
        raise AssertionError(_tamper_message(what, tampered))
    if watcher.hits:
        raise AssertionError(
            f"{what} calls {watcher.hits[0]}, which does the very computation this part asks you to "
            f"write yourself, so this part gets no credit. Write it with basic tensor operations "
            f"(matmul, softmax, masked_fill, view, transpose).")
    return result


@contextlib.contextmanager
def quiet():
    """Silence stdout, stderr and warnings for a block (for code that is not a single call)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- comparing


def close(got, want, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """True when ``got`` is a tensor of ``want``'s shape and close to it (compared in float64)."""
    return (type(got) in (torch.Tensor, nn.Parameter) and tuple(got.shape) == tuple(want.shape)
            and bool(torch.allclose(got.detach().double(), want.detach().double(), atol=atol, rtol=rtol)))


def require_tensor(x, name: str, shape: tuple | None = None) -> torch.Tensor:
    """Assert that ``x`` is a tensor (of ``shape``), with a message naming ``name``."""
    assert isinstance(x, torch.Tensor), f"{name} should be a torch.Tensor, got {type(x).__name__}"
    assert type(x) in (torch.Tensor, nn.Parameter), (
        f"{name} is a {type(x).__name__}, a subclass of torch.Tensor: return a plain torch.Tensor")
    if shape is not None:
        assert tuple(x.shape) == tuple(shape), (
            f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    return x


def diagnose(got: torch.Tensor, variants: dict, default: str) -> str:
    """Name the first known-wrong variant that ``got`` equals, or return ``default``.

    ``variants`` maps a learner-facing explanation to a zero-argument function computing
    what that mistake would produce (it may fail: such a variant is skipped).
    """
    for message, make in variants.items():
        try:
            with quiet():
                want = make()
        except Exception:
            continue
        if want is not None and close(got, want, atol=1e-4, rtol=1e-3):
            return message
    return default
