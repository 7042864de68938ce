"""What every assignment's hidden tests need, whatever the assignment.

1. :func:`call_learner` runs learner code with its stdout and stderr captured and its
   warnings silenced. nbgrader scores a test cell with *any* stderr output as failed, so a
   learner's harmless ``print`` or ``warnings.warn`` must not cost points; a real exception
   from learner code becomes an ``AssertionError`` saying "your function raised X: ...".
2. Forbidden calls: a part whose code calls the library routine that does the work
   (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``, the course's own
   ``llmcourse.attention`` / ``llmcourse.gpt``), or any function of the grader itself
   (``llmcourse.grading.*``: the checks' private references, ``close``, ...), gets no
   credit. Calls are seen with ``sys.setprofile`` ('c_call' events whose argument is a
   forbidden builtin, 'call' events whose code object is a forbidden Python function or
   lives in a forbidden module's file), so aliasing at import time does not hide them. The
   profile function is made afresh for every call from copies taken when the call starts,
   so nothing the learner's code rebinds while it runs changes what it sees.
3. :func:`graded` makes a check deterministic (seeded, warnings off, float32 and gradients
   on, the learner's torch function modes set aside) and prints a one-line ``ok: ...``
   when it passes.
4. The tamper guard (:mod:`llmcourse.grading.guard`) hands its snapshot ``G`` to this
   module as ``_GUARD``. :func:`call_learner` and :func:`graded` copy it into local
   variables when they start and run its comparison after every call into learner code
   and at the end of every check: a check during which anything guarded was changed
   fails with "tampering detected", whatever the learner's code rebound in the meantime.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import io
import os
import random
import sys
import sysconfig
import traceback
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the guard's snapshot and comparison, set by :func:`llmcourse.grading.guard.install`
#: (``None`` when the checks run without the guard, as in the course's own tests)
_GUARD = None

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


def _make_kit() -> tuple:
    """The C functions the checks call after learner code has run (captured once)."""
    C = torch._C
    return (sys.setprofile, sys.getprofile, sys.settrace, sys.gettrace,
            torch.get_default_dtype, C._set_default_dtype, torch.is_grad_enabled, C._set_grad_enabled,
            C._len_torch_function_stack, C._pop_torch_function_stack, C._push_on_torch_function_stack,
            C._len_torch_dispatch_stack, C._pop_torch_dispatch_stack, C._push_on_torch_dispatch_stack,
            torch.float32, C._get_deterministic_algorithms, C._get_deterministic_algorithms_warn_only,
            C._set_deterministic_algorithms)


_KIT = _make_kit()


def _set_aside(kit) -> tuple:
    """Set the global torch state a check relies on (float32, gradients on, the default
    algorithms, no learner torch function or dispatch modes); return what to put back after."""
    (_, _, _, _, get_dtype, set_dtype, grad_on, set_grad, fn_len, fn_pop, _, d_len, d_pop, _, f32,
     get_det, get_det_warn, set_det) = kit
    saved = (get_dtype(), grad_on(), [fn_pop() for _ in range(fn_len())], [d_pop() for _ in range(d_len())],
             get_det(), get_det_warn())
    set_dtype(f32)
    set_grad(True)
    set_det(False)
    return saved


def _put_back(kit, saved) -> None:
    (_, _, _, _, _, set_dtype, _, set_grad, fn_len, fn_pop, fn_push, d_len, d_pop, d_push, _, _, _, set_det) = kit
    dtype, grad, fn_modes, d_modes, det, det_warn = saved
    set_det(det, warn_only=det_warn)
    while fn_len():                                   # a mode the check itself left (never expected)
        fn_pop()
    while d_len():
        d_pop()
    for mode in reversed(fn_modes):
        fn_push(mode)
    for mode in reversed(d_modes):
        d_push(mode)
    set_dtype(dtype)
    set_grad(grad)


def graded(what: str, seed: int = 0):
    """Decorator for a check: seeded, warnings silenced, torch's global state neutral, guarded
    from start to end, prints ``ok: <what>`` on success."""
    def deco(check):
        @functools.wraps(check)
        def wrapper(*args, **kwargs):
            # everything is as in the snapshot now (the guard ran before this cell): keep what
            # the end of the check needs in local variables, which learner code cannot rebind
            G, run, label, kit = _GUARD, check, what, _KIT
            if G is not None:
                kit = G[5]
                found = G[0](G[1], {"__builtins__": {}})(G, "before a test")
                if found:
                    print(_guard_note(found, "before this test"))
            saved = _set_aside(kit)
            error = result = None
            found = []
            try:
                with seeded(seed), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = run(*args, **kwargs)
            except BaseException as exc:              # noqa: BLE001 (re-raised below)
                error = exc
            finally:
                _put_back(kit, saved)
                if G is not None:
                    found = G[0](G[1], {"__builtins__": {}})(G, f"during the test: {label}")
            if found:
                raise AssertionError(_tamper_message("the test", found)) from None
            if error is not None:
                raise error
            print(f"ok: {label}")
            return result
        return wrapper
    return deco


# ----------------------------------------------------------------------------- forbidden calls


@dataclass
class Forbidden:
    """What a part may not call: builtins, Python code objects, whole source files."""
    builtins: dict = field(default_factory=dict)   # builtin object -> description
    codes: dict = field(default_factory=dict)      # code object -> description
    files: dict = field(default_factory=dict)      # path of a .py file -> description

    def __post_init__(self):
        # the path a code object carries is the one it was imported from; match its real path too
        self.files = {variant: desc for path, desc in self.files.items()
                      for variant in {path, os.path.realpath(path), os.path.abspath(path)}}

    def __or__(self, other: "Forbidden") -> "Forbidden":
        return Forbidden({**self.builtins, **other.builtins}, {**self.codes, **other.codes},
                         {**self.files, **other.files})


def _module_file(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return spec.origin if spec and spec.origin else None


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

_GRADING_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep   # this package and its checks


def _grading_files() -> dict:
    """Every source file of the grading package (as imported and real) -> its module name."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = {}
    for path in glob.glob(os.path.join(here, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, here)[:-3].replace(os.sep, ".")
        mod = "llmcourse.grading" + ("" if rel == "__init__" else "." + rel.removesuffix(".__init__"))
        for variant in {path, os.path.realpath(path)}:
            out[variant] = mod
    return out


def _library_prefixes() -> tuple:
    """Where library code lives (the standard library, site-packages): frames there are
    neither the learner's nor the grader's."""
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs |= {os.path.dirname(os.path.dirname(m.__file__)) for m in (torch, _numpy()) if m is not None}
    dirs |= {os.path.realpath(d) for d in dirs}
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in dirs if d)) + ("<frozen ",)


def _numpy():
    try:
        import numpy
    except ImportError:                                  # pragma: no cover (numpy comes with torch here)
        return None
    return numpy


def _introspection() -> dict:
    """Functions whose call from learner code, while a check watches it, is tampering: they
    reach the profiler, frames or every object of the interpreter."""
    import gc

    return {sys.setprofile: "sys.setprofile", sys.getprofile: "sys.getprofile", sys.settrace: "sys.settrace",
            sys._getframe: "sys._getframe", gc.get_objects: "gc.get_objects", gc.get_referrers: "gc.get_referrers",
            gc.get_referents: "gc.get_referents"}


def _escapes() -> dict:
    """Calls that would run code where the profiler cannot see it: another thread or process."""
    import _thread

    out = {getattr(_thread, n): f"_thread.{n} (a thread the grader cannot watch)"
           for n in ("start_new_thread", "start_joinable_thread") if hasattr(_thread, n)}
    out.update({getattr(os, n): f"os.{n} (a process the grader cannot watch)"
                for n in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system") if hasattr(os, n)})
    try:
        import _posixsubprocess
        out[_posixsubprocess.fork_exec] = "a subprocess (which the grader cannot watch)"
    except ImportError:                                  # pragma: no cover (not POSIX)
        pass
    return out


#: what every watcher consults: the grader's files, where libraries live, the calls above
_WATCH = (_grading_files(), _library_prefixes(), _introspection(), _escapes())


def _make_watcher(forbid: Forbidden, watch: tuple):
    """A fresh ``sys.setprofile`` function, with copies of everything it consults, that records
    forbidden calls (``hits``, ``grader``) and tampering (``tampers``) of the learner's code."""
    grading, library, introspection, escapes = watch
    builtins_get = {**escapes, **forbid.builtins}.get
    intro_get = dict(introspection).get
    codes_get = dict(forbid.codes).get
    files_get = dict(forbid.files).get
    grading_get = dict(grading).get
    hits, grader, tampers = [], [], []

    def watcher(frame, event, arg):
        hit = None
        if event == "c_call":
            try:
                hit = builtins_get(arg)
                bad = intro_get(arg)
            except TypeError:                                   # unhashable callable
                return
            if bad is not None:
                caller = frame.f_code.co_filename
                if grading_get(caller) is None and not caller.startswith(library):
                    if bad not in tampers:
                        tampers.append(bad)
        elif event == "call":
            code = frame.f_code
            hit = codes_get(code) or files_get(code.co_filename)
            mod = grading_get(code.co_filename) if hit is None else None
            qual = code.co_qualname if mod is not None else ""
            if mod is not None and ("<locals>" in qual or "." not in qual):    # not a method of a class
                f = frame.f_back
                while f is not None:                            # who called it: the grader, or the learner?
                    caller = f.f_code.co_filename
                    if grading_get(caller) is not None:
                        break
                    if not caller.startswith(library):
                        hit = f"{mod}.{qual}"
                        if hit not in grader:
                            grader.append(hit)
                        break
                    f = f.f_back
        if hit and hit not in hits:
            hits.append(hit)

    return watcher, hits, grader, tampers


def _learner_line(tb) -> str:
    """The last traceback line that is not in this package or in torch, for the message."""
    frames = [f for f in traceback.extract_tb(tb)
              if not os.path.realpath(f.filename).startswith(_GRADING_DIR)
              and f"{os.sep}torch{os.sep}" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at `{f.line}`)" if f.line else ""


def _guard_note(found: list, where: str) -> str:
    return (f"note: tampering detected {where}: " + "; ".join(found[:5])
            + (f" (and {len(found) - 5} more)" if len(found) > 5 else "")
            + ". The grader put the originals back, so this test ran against them.")


def _tamper_message(what: str, found: list) -> str:
    return (f"tampering detected: while {what} ran, " + "; ".join(found[:5])
            + (f" (and {len(found) - 5} more)" if len(found) > 5 else "")
            + ". The grader put the originals back; this part gets no credit.")


_NOTHING = Forbidden()


def call_learner(fn, *args, what: str = "your function", forbid: Forbidden | None = None, **kwargs):
    """Call ``fn(*args, **kwargs)`` quietly; turn its exceptions and forbidden calls into failures.

    stdout and stderr are captured and warnings are silenced during the call, so a learner's
    print or warning does not make nbgrader fail the test cell. Exceptions raised by the
    learner's code are re-raised as ``AssertionError("<what> raised X: ...")`` whose ``raised``
    attribute is the exception's class; a call to
    anything in ``forbid``, or to any function of the grader, is an ``AssertionError`` that
    says the part gets no credit; so is any change to what the guard watches.
    """
    G, kit = _GUARD, _KIT
    if G is not None:
        kit = G[5]
    setprofile, getprofile, settrace, gettrace = kit[0], kit[1], kit[2], kit[3]
    fn_len, fn_pop, d_len, d_pop = kit[8], kit[9], kit[11], kit[12]
    watcher, hits, grader, tampers = _make_watcher(forbid or _NOTHING, _WATCH)
    old_profile, old_trace = getprofile(), gettrace()
    modes = (fn_len(), d_len())
    tampered: list[str] = []
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            setprofile(watcher)
            try:
                result = fn(*args, **kwargs)
            finally:
                if gettrace() is not old_trace:
                    settrace(old_trace)
                    tampered.append("a trace function was installed (sys.settrace)")
                if getprofile() is not watcher:
                    tampered.append("the profiler that watches for library calls was switched off")
                setprofile(old_profile)
                for name in tampers:
                    tampered.append(f"it called {name}, which reaches into the grader")
                if fn_len() > modes[0] or d_len() > modes[1]:
                    tampered.append("it left a torch function or dispatch mode active")
                    while fn_len() > modes[0]:
                        fn_pop()
                    while d_len() > modes[1]:
                        d_pop()
                if G is not None:
                    tampered += G[0](G[1], {"__builtins__": {}})(G, f"during {what}")
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
        err = AssertionError(f"{what} raised {type(e).__name__}{detail}{_learner_line(e.__traceback__)}{hint}")
        err.raised = type(e)          # a check that expects an exception tests the class, subclasses included
        raise err from None
    if tampered:
        raise AssertionError(_tamper_message(what, tampered))
    if grader:
        raise AssertionError(
            f"{what} calls {grader[0]}, one of the grader's own functions, so this part gets no credit: "
            f"the grader's code is there to check yours, not to do its work. Write it yourself with basic "
            f"tensor operations.")
    if hits:
        raise AssertionError(
            f"{what} calls {hits[0]}, which does the very computation this part asks you to "
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
