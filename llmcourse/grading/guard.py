"""Tamper guard: an IPython extension the grader loads into the kernel before any cell runs.

nbgrader runs the hidden tests in the learner's own namespace, after the learner's
cells. A submission could replace what the tests rely on (``torch.allclose``,
``numpy.testing``, a builtin, a function of the grader's own modules) or change it in
place (a function's code, its default arguments, a class's methods, a list of test
cases) so that wrong code passes. When the kernel starts, the guard takes a snapshot of
all of it, **by value**: the attributes of every guarded module (``sys.modules`` entries
and the modules' types included) and class, and for every function found there its code,
default arguments, keyword defaults, closure cells and attributes; for the course's own
modules also the contents of their lists, dicts and objects. After every cell and before
the next, after every call the checks make into learner code
(:func:`llmcourse.grading.common.call_learner`) and at the end of every check
(:func:`llmcourse.grading.common.graded`) it compares the interpreter with the snapshot,
puts back whatever differs, and says so: for a cell with a note in its output ("tampering
detected by this cell"), inside a check by failing it with "tampering detected". Undoing a
cell's changes right after it also keeps the kernel alive: with ``builtins.isinstance``
replaced, ipykernel itself could not send the cell's reply.

Nothing the guard runs can be switched off by rebinding a name. The comparison is one
function, :func:`_core`, that uses no global or builtin name: it is run as a fresh function
object built from its code object (immutable) with empty globals, and it gets the snapshot
and the C functions it needs in one tuple (immutable), ``G``. The cell hooks hold ``G``
in closures that only IPython's event list refers to; the checks read ``G`` from
:mod:`~llmcourse.grading.common` when they start, while everything is as in the snapshot,
and keep it in local variables, which learner code cannot reach by name::

    found = G[0](G[1], {"__builtins__": {}})(G, "where")   # a list of what was put back

It is not a security boundary: code that goes after the guard through IPython's event
machinery, ``gc``, ``ctypes``, frame objects or trace functions, or a thread or finalizer
that undoes its change before the guard looks, is out of its reach; the grader's sandbox
and its scan of the submission's source cover some of that, and the README says what is
left.

Load it with ``ipython --ext=llmcourse.grading.guard`` (``nbgrader_config.py`` passes
the flag to every kernel it starts).
"""
from __future__ import annotations

import builtins
import importlib
import operator
import pkgutil
import sys
import types
from itertools import chain, repeat

#: modules whose attributes the tests rely on; llmcourse and all its submodules are added,
#: and every loaded submodule of GUARDED_PACKAGES
GUARDED_MODULES = (
    "builtins", "math", "operator", "functools", "itertools", "copy", "random",
    "importlib", "_frozen_importlib", "_frozen_importlib_external",
    "numpy", "numpy.testing",
    "torch", "torch.testing", "torch.nn", "torch.nn.functional", "torch.nn.parameter", "torch.nn.init",
    "torch.linalg", "torch.random", "torch._tensor", "torch.overrides", "torch.functional",
    "torch.autograd", "torch.autograd.function", "torch.autograd.graph", "torch.distributions",
    "torch.distributions.distribution", "torch.distributions.categorical", "torch.distributions.utils",
)
GUARDED_PACKAGES = ("torch.nn.modules", "torch.testing", "llmcourse")
#: the attributes of ``sys`` that are guarded (the rest changes under IPython: stdout, displayhook, ...)
SYS_ATTRS = ("modules", "setprofile", "getprofile", "settrace", "gettrace", "_getframe")

#: names that change under honest code: IPython and ipykernel rebind these builtins while
#: running cells, and torch points ``torch.Storage`` at the default dtype's storage
#: (``torch.set_default_dtype``; the checks run with float32, see ``common.graded``)
IPYTHON_MANAGED = frozenset({("builtins", n) for n in ("input", "raw_input", "get_ipython", "display", "exit",
                                                       "quit", "_", "__", "___", "help", "__IPYTHON__")}
                            | {("torch", "Storage")})
#: changes torch makes by itself, restored without a note: importing ``torch._dynamo`` (which
#: ``torch.use_deterministic_algorithms`` does) wraps ``torch.manual_seed``; ``torch.compile``
#: switches off the validation of distributions' arguments
SILENT = frozenset({("torch", "manual_seed"), ("torch.distributions.distribution.Distribution", "_validate_args")})
#: where ``G`` is kept: the checks find it in common, the guard's own functions here (the only
#: snapshot entries whose value is ``G`` itself)
GUARD_SLOTS = {"llmcourse.grading.common": "_GUARD", "llmcourse.grading.guard": "_G"}

_G = None

_NO_ADDITIONS, _SHADOWING, _STRICT = 0, 1, 2        # which names added to a module are tampering
_HEAPTYPE = 1 << 9


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


# ----------------------------------------------------------------------------- the comparison


def _core(G, where):
    """Compare the interpreter with the snapshot in ``G``, put back what differs, return what did.

    Runs with empty globals (see the module docstring): every name it uses is a local, an
    argument or an item of ``G``. Each section is first compared as a whole, by C code
    (``map`` of ``operator.is_`` over flat tuples); only a section that differs is walked
    entry by entry. Values are only ever compared by identity, so no learner ``__eq__`` runs.
    """
    S, K, events = G[2], G[3], G[4]
    (is_, map_, all_, len_, type_, list_, zip_, repeat_, chain_, call_, eq_, str_, getcode, getdefaults,
     getkwdefaults, getdict, getcell, obj_setattr, obj_getattr, type_setattr, type_delattr, get_bases, MISSING,
     LookupError_, ValueError_, Exception_, getprofile, setprofile, gettrace, settrace, sys_modules,
     builtin_names) = K
    hooks, sysmods, modules, funcs, cells, classes, containers, instances, silent = S
    found = []

    # trace and profile functions first: one left behind would watch the rest of this
    saved_trace, saved_profile = hooks
    if gettrace() is not saved_trace:
        settrace(saved_trace)
        found.append("a trace function was installed (sys.settrace)")
    if getprofile() is not saved_profile:
        setprofile(saved_profile)
        found.append("a profile function was installed (sys.setprofile)")

    names, objs = sysmods
    if not all_(map_(is_, map_(sys_modules.get, names, repeat_(MISSING)), objs)):
        for name, mod in zip_(names, objs):
            if sys_modules.get(name, MISSING) is not mod:
                sys_modules[name] = mod
                found.append(f"sys.modules[{name!r}] was replaced")

    # modules: their type, the values of their names, names added, the slot that holds G
    entries, mobjs, mtypes, dicts, getters, flat, sized, sizes, self_dicts, self_getters = modules
    try:
        same = (all_(map_(is_, map_(type_, mobjs), mtypes))
                and all_(map_(is_, chain_(map_(call_, getters, dicts)), flat))
                and all_(map_(eq_, map_(len_, sized), sizes))
                and all_(map_(is_, map_(call_, self_getters, self_dicts), repeat_(G))))
    except LookupError_:
        same = False
    if not same:
        for name, mod, mtype, d, keys, vals, keyset, additions, selfkey, size in entries:
            if type_(mod) is not mtype:
                obj_setattr(mod, "__class__", mtype)
                found.append(f"the type of module {name} was changed")
            if additions and not all_(map_(is_, map_(type_, d), repeat_(str_))):
                keep = [(k, v) for k, v in d.items() if type_(k) is str_]
                d.clear()
                d.update(keep)
                found.append(f"module {name} was given names that are not strings")
            for k, v in zip_(keys, vals):
                cur = d.get(k, MISSING)
                if cur is not v:
                    d[k] = v
                    found.append(f"{name}.{k} was " + ("deleted" if cur is MISSING else "replaced"))
            if selfkey is not None and d.get(selfkey, MISSING) is not G:
                d[selfkey] = G
                found.append(f"{name}.{selfkey} was replaced")
            if additions and len_(d) != size:
                for k in d.keys() - keyset:
                    if k == selfkey or k in ("__warningregistry__", "__annotations__"):
                        continue
                    if additions == 2:
                        if sys_modules.get(f"{name}.{k}", MISSING) is d[k]:
                            continue                        # a submodule imported since
                    elif not (k in builtin_names or k == "__getattr__"):
                        continue                            # harmless (a lazily loaded submodule, say)
                    del d[k]
                    found.append(f"{name}.{k} was added")

    # functions, changed in place: code, defaults, keyword defaults, attributes, closure cells
    fnames, fobjs, codes, defaults, kwdefaults, fdicts = funcs
    if not (all_(map_(is_, map_(getcode, fobjs), codes)) and all_(map_(is_, map_(getdefaults, fobjs), defaults))
            and all_(map_(is_, map_(getkwdefaults, fobjs), kwdefaults))
            and all_(map_(is_, map_(getdict, fobjs), fdicts))):
        for name, f, c, df, kw, fd in zip_(fnames, fobjs, codes, defaults, kwdefaults, fdicts):
            what = []
            if getcode(f) is not c:
                f.__code__ = c
                what.append("its code")
            if getdefaults(f) is not df:
                f.__defaults__ = df
                what.append("its default arguments")
            if getkwdefaults(f) is not kw:
                f.__kwdefaults__ = kw
                what.append("its keyword defaults")
            if getdict(f) is not fd:
                f.__dict__ = fd
                what.append("its attributes")
            if what:
                found.append(f"{name} was changed in place ({', '.join(what)})")
    cnames, cellobjs, contents = cells
    try:
        same = all_(map_(is_, map_(getcell, cellobjs), contents))
    except ValueError_:                                     # an emptied cell
        same = False
    if not same:
        for name, cell, v in zip_(cnames, cellobjs, contents):
            try:
                cur = getcell(cell)
            except ValueError_:
                cur = MISSING
            if cur is not v:
                cell.cell_contents = v
                found.append(f"{name} was changed in place (a variable of its closure)")

    # classes: metaclass, bases, attributes (replaced, deleted or added)
    entries, cobjs, metas, bases, proxies, getters, flat, sizes = classes
    try:
        same = (all_(map_(is_, map_(type_, cobjs), metas)) and all_(map_(is_, map_(get_bases, cobjs), bases))
                and all_(map_(eq_, map_(len_, proxies), sizes))
                and all_(map_(is_, chain_(map_(call_, getters, proxies)), flat)))
    except LookupError_:
        same = False
    if not same:
        for qual, cls, meta, proxy, keys, vals, keyset, saved_bases, size in entries:
            if type_(cls) is not meta:
                obj_setattr(cls, "__class__", meta)
                found.append(f"the metaclass of {qual} was changed")
            if get_bases(cls) is not saved_bases:
                try:
                    type_setattr(cls, "__bases__", saved_bases)
                except Exception_:
                    pass
                found.append(f"the base classes of {qual} were changed")
            for k, v in zip_(keys, vals):
                cur = proxy.get(k, MISSING)
                if cur is not v:
                    try:
                        type_setattr(cls, k, v)
                    except Exception_:
                        pass
                    found.append(f"{qual}.{k} was " + ("deleted" if cur is MISSING else "replaced"))
            if len_(proxy) != size:
                for k in list_(proxy):
                    if k == "__slotnames__" and k not in keyset:
                        continue                            # cached by copy/pickle (see _Snapshot.klass)
                    if type_(k) is not str_ or k not in keyset:
                        try:
                            type_delattr(cls, k)
                        except Exception_:
                            continue
                        found.append(f"{qual}.{k} was added")

    # the course's lists, dicts and sets, changed in place; its objects' classes and attributes
    (lists, list_lens, list_flat, list_entries, dicts, dict_lens, dict_keys, dict_vals, dict_entries,
     set_entries) = containers
    if not (all_(map_(eq_, map_(len_, lists), list_lens)) and all_(map_(is_, chain_(lists), list_flat))):
        for desc, obj, saved in list_entries:
            if len_(obj) != len_(saved) or not all_(map_(is_, obj, saved)):
                obj[:] = saved
                found.append(f"{desc} was changed in place")
    if not (all_(map_(eq_, map_(len_, dicts), dict_lens)) and all_(map_(is_, chain_(dicts), dict_keys))
            and all_(map_(is_, chain_(map_(call_, repeat_(dict_vals[0]), dicts)), dict_vals[1]))):
        for desc, obj, keys, vals in dict_entries:
            if len_(obj) != len_(keys) or not (all_(map_(is_, obj, keys)) and all_(map_(is_, obj.values(), vals))):
                obj.clear()
                obj.update(zip_(keys, vals))
                found.append(f"{desc} was changed in place")
    for desc, obj, saved in set_entries:
        if len_(obj) != len_(saved) or not all_(map_(obj.__contains__, saved)):
            obj.clear()
            obj.update(saved)
            found.append(f"{desc} was changed in place")
    iobjs, itypes, idicts, ientries = instances
    if not (all_(map_(is_, map_(type_, iobjs), itypes))
            and all_(map_(is_, map_(obj_getattr, iobjs, repeat_("__dict__")), idicts))):
        for desc, obj, cls, dobj in ientries:
            if type_(obj) is not cls:
                obj_setattr(obj, "__class__", cls)
                found.append(f"the class of {desc} was changed")
            if obj_getattr(obj, "__dict__") is not dobj:
                obj_setattr(obj, "__dict__", dobj)
                found.append(f"the attributes of {desc} were replaced")

    # what torch changes by itself: put back, without a note
    for obj, is_class, k, v in silent:
        if is_class:
            if obj.__dict__.get(k, MISSING) is not v:
                type_setattr(obj, k, v)
        elif obj.get(k, MISSING) is not v:
            obj[k] = v

    if found:
        events.append((where, found))
    return found


# ----------------------------------------------------------------------------- the snapshot


class _Snapshot:
    """Collects what :func:`_core` compares (used once, when the guard is installed)."""

    def __init__(self):
        self.modules, self.funcs, self.cells, self.classes, self.containers, self.instances = [], [], [], [], [], []
        self.silent: list = []
        self.seen: set[int] = set()

    def _once(self, obj) -> bool:
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        return True

    def module(self, name: str, mod, course: bool) -> None:
        d = vars(mod)
        if name == "sys":
            keys = tuple(k for k in SYS_ATTRS if k in d)
            additions = _NO_ADDITIONS
        else:
            # __warningregistry__: the warnings module's record of warnings issued from the module's
            # code, which an honest warning changes (ignored when added, too)
            keys = tuple(k for k in d if type(k) is str and (name, k) not in IPYTHON_MANAGED
                         and k != GUARD_SLOTS.get(name) and (name, k) not in SILENT and k != "__warningregistry__")
            self.silent += [(d, False, k, d[k]) for k in d if (name, k) in SILENT]
            additions = (_NO_ADDITIONS if name == "builtins"
                         else _STRICT if name.startswith("llmcourse.grading") else _SHADOWING)
        selfkey = GUARD_SLOTS.get(name)
        self.modules.append((name, mod, type(mod), d, keys, tuple(d[k] for k in keys), frozenset(keys),
                             additions, selfkey, len(d)))
        for k in keys:
            self.value(d[k], f"{name}.{k}", name, course)

    def value(self, v, desc: str, modname: str, course: bool, depth: int = 0, via: str | None = None) -> None:
        """Register what ``v`` holds that can change in place (functions, classes, containers)."""
        if depth > 6 or v is vars(builtins):       # a module's __builtins__: guarded as the builtins module
            return
        if isinstance(v, types.FunctionType):
            self.function(v, course, via)
        elif isinstance(v, type):
            if getattr(v, "__module__", None) == modname and v.__flags__ & _HEAPTYPE:
                self.klass(v, f"{modname}.{v.__qualname__}", course)
        elif isinstance(v, (staticmethod, classmethod)):
            self.value(v.__func__, desc, modname, course, depth + 1)
        elif isinstance(v, property):
            for f in (v.fget, v.fset, v.fdel):
                if f is not None:
                    self.value(f, desc, modname, course, depth + 1)
        elif not course:
            return
        elif type(v) in (list, dict, set):
            if self._once(v):
                self.containers.append((desc, v, (list, dict, set).index(type(v))))
                for i, (k, item) in enumerate(v.items() if type(v) is dict else enumerate(v)):
                    sub = (f"{desc}.{k}" if desc.endswith("__dict__") else f"{desc}[{k!r}]") if type(k) is str \
                        else f"{desc}[{i}]"
                    self.value(item, sub.replace(".__dict__.", "."), modname, course, depth + 1)
        elif type(v) in (tuple, frozenset):
            for i, item in enumerate(v):
                self.value(item, f"{desc}[{i}]", modname, course, depth + 1)
        elif (type(v).__module__ or "").startswith("llmcourse") and hasattr(v, "__dict__") and self._once(v):
            self.instances.append((desc, v, type(v), vars(v)))
            self.value(vars(v), f"{desc}.__dict__", modname, course, depth + 1)

    def function(self, f, course: bool, via: str | None = None) -> None:
        if not self._once(f):
            return
        name = f"{f.__module__}.{f.__qualname__}" + (f" (inside {via})" if via else "")
        self.funcs.append((name, f, f.__code__, f.__defaults__, f.__kwdefaults__, f.__dict__))
        if not course:
            return
        for cell in f.__closure__ or ():
            try:
                content = cell.cell_contents
            except ValueError:
                continue
            self.cells.append((name, cell, content))
            self.value(content, f"the closure of {name}", f.__module__ or "", course, via=name)
        for part, what in ((f.__defaults__ or (), "defaults"), (f.__kwdefaults__, "keyword defaults"),
                           (f.__dict__, "attributes")):
            if part is not None:
                self.value(part, f"the {what} of {name}", f.__module__ or "", course, via=name)

    def klass(self, cls, qual: str, course: bool) -> None:
        if not self._once(cls):
            return
        proxy = vars(cls)
        # __slotnames__: copy.deepcopy and pickle cache a class's slot names on it the first time
        # they copy an instance, so an honest deepcopy of a model adds it (ignored when added, too)
        keys = tuple(k for k in proxy if (qual, k) not in SILENT and k != "__slotnames__")
        self.silent += [(cls, True, k, proxy[k]) for k in proxy if (qual, k) in SILENT]
        self.classes.append((qual, cls, type(cls), proxy, keys, tuple(proxy[k] for k in keys), frozenset(proxy),
                             cls.__bases__, len(proxy)))
        for k in keys:
            v = proxy[k]
            if course or isinstance(v, (types.FunctionType, staticmethod, classmethod, property, type)):
                self.value(v, f"{qual}.{k}", cls.__module__, course, 1)

    def freeze(self) -> tuple:
        """The snapshot as nested tuples, in the layout :func:`_core` unpacks."""
        def getter(keys):
            # always returns a tuple, even for one key
            return operator.itemgetter(*keys) if len(keys) > 1 else operator.itemgetter(*keys, *keys)

        def padded(keys, vals):
            return tuple(vals) if len(keys) > 1 else tuple(vals) * 2

        mods = [m for m in self.modules if m[4]]
        with_self = [m for m in self.modules if m[8] is not None]
        modules = (tuple(self.modules), tuple(m[1] for m in self.modules), tuple(m[2] for m in self.modules),
                   tuple(m[3] for m in mods), tuple(getter(m[4]) for m in mods),
                   tuple(chain.from_iterable(padded(m[4], m[5]) for m in mods)),
                   tuple(m[3] for m in self.modules if m[7]), tuple(m[9] for m in self.modules if m[7]),
                   tuple(m[3] for m in with_self), tuple(operator.itemgetter(m[8]) for m in with_self))
        cls = [c for c in self.classes if c[4]]
        classes = (tuple(self.classes), tuple(c[1] for c in self.classes), tuple(c[2] for c in self.classes),
                   tuple(c[7] for c in self.classes), tuple(c[3] for c in cls), tuple(getter(c[4]) for c in cls),
                   tuple(chain.from_iterable(padded(c[4], c[5]) for c in cls)), tuple(c[8] for c in cls))
        lists = [(d, o, tuple(o)) for d, o, kind in self.containers if kind == 0]
        dicts = [(d, o, tuple(o), tuple(o.values())) for d, o, kind in self.containers if kind == 1]
        sets = [(d, o, tuple(o)) for d, o, kind in self.containers if kind == 2]
        containers = (tuple(x[1] for x in lists), tuple(len(x[2]) for x in lists),
                      tuple(chain.from_iterable(x[2] for x in lists)), tuple(lists),
                      tuple(x[1] for x in dicts), tuple(len(x[2]) for x in dicts),
                      tuple(chain.from_iterable(x[2] for x in dicts)),
                      (dict.values, tuple(chain.from_iterable(x[3] for x in dicts))), tuple(dicts), tuple(sets))
        instances = (tuple(x[1] for x in self.instances), tuple(x[2] for x in self.instances),
                     tuple(x[3] for x in self.instances), tuple(self.instances))
        return (
            (sys.gettrace(), sys.getprofile()),
            (tuple(m[0] for m in self.modules), tuple(m[1] for m in self.modules)),
            modules,
            tuple(tuple(x[i] for x in self.funcs) for i in range(6)),
            tuple(tuple(x[i] for x in self.cells) for i in range(3)),
            classes,
            containers,
            instances,
            tuple(self.silent),
        )


def _toolkit() -> tuple:
    getter = operator.attrgetter
    return (operator.is_, map, all, len, type, list, zip, repeat, chain.from_iterable, operator.call, operator.eq, str,
            getter("__code__"), getter("__defaults__"), getter("__kwdefaults__"), getter("__dict__"),
            getter("cell_contents"), object.__setattr__, object.__getattribute__, type.__setattr__, type.__delattr__,
            type.__dict__["__bases__"].__get__, _MISSING, LookupError, ValueError, Exception, sys.getprofile,
            sys.setprofile, sys.gettrace, sys.settrace, sys.modules, frozenset(k for k in vars(builtins) if type(k) is str))


def _import_guarded() -> dict:
    import llmcourse  # noqa: F401
    import llmcourse.grading.checks as checks

    # every assignment's checks (and what they import), so that replacing a check is undone too
    for info in pkgutil.iter_modules(checks.__path__):
        importlib.import_module(f"llmcourse.grading.checks.{info.name}")
    names = ["sys", *GUARDED_MODULES]
    names += sorted(n for n in list(sys.modules) if n.startswith(tuple(p + "." for p in GUARDED_PACKAGES))
                    or n in GUARDED_PACKAGES)
    modules = {}
    for name in names:
        try:
            mod = sys.modules.get(name) or importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(mod, types.ModuleType) and name not in modules:
            modules[name] = mod
    return modules


def build():
    """Import what is guarded and take the snapshot; return ``G`` (see the module docstring)."""
    from . import common

    modules = _import_guarded()
    snap = _Snapshot()
    # the course's own modules first, so that their functions get the full fingerprint
    order = sorted(modules, key=lambda n: not n.startswith("llmcourse"))
    for name in order:
        snap.module(name, modules[name], course=name.startswith("llmcourse"))
    return (types.FunctionType, _core.__code__, snap.freeze(), _toolkit(), [], common._KIT)


def install():
    """Take the snapshot and hand it to the checks (idempotent); return ``G``."""
    from . import common

    if _G is not None:
        return _G
    G = build()
    common.__dict__["_GUARD"] = G
    globals()["_G"] = G
    return G


def run(G, where: str = "") -> list:
    """Run the comparison of ``G`` (what the checks do inline)."""
    return G[0](G[1], {"__builtins__": {}})(G, where)


def check_and_restore(where: str = "") -> list[str]:
    """Put back everything changed since the snapshot; return (and remember) what was."""
    return [] if _G is None else run(_G, where)


def events() -> list:
    """Every detection so far, as ``(where, [what was put back, ...])``."""
    return [] if _G is None else [(w, list(f)) for w, f in _G[4]]


def note(found: list, says: str = "before this cell") -> str:
    """The line a detection puts in the feedback."""
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    return (f"note: tampering detected {says}: " + "; ".join(found[:5]) + more
            + ". The grader put the originals back; the tests run against them.\n")


def _make_hook(G, stream, where: str, says: str):
    """A cell hook: a closure that only IPython's event list refers to."""
    make, code, write = G[0], G[1], stream.write

    def guard_cell_hook(*args):
        found = make(code, {"__builtins__": {}})(G, where)
        if found:
            write(note(found, says))
            try:
                stream.flush()
            except Exception:
                pass

    return guard_cell_hook


#: IPython events the guard hooks into: right after a cell (so that what the cell changed is
#: undone before IPython and the kernel go on: a replaced builtin would hang the kernel's
#: reply) and right before the next one
HOOKS = (("post_run_cell", "after a cell", "by this cell"), ("pre_run_cell", "before a cell", "before this cell"))


def load_ipython_extension(ip) -> None:
    """IPython entry point (``--ext=llmcourse.grading.guard``)."""
    G = install()
    for event, where, says in HOOKS:
        ip.events.register(event, _make_hook(G, sys.stdout, where, says))


def unload_ipython_extension(ip) -> None:
    for event, _, _ in HOOKS:
        for cb in list(ip.events.callbacks.get(event, [])):
            if getattr(cb, "__qualname__", "") == "_make_hook.<locals>.guard_cell_hook":
                ip.events.unregister(event, cb)
