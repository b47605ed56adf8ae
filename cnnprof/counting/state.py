"""Counting never changes a user's model: every module's state is put back as it was after the traced run.

A forward pass on meta tensors can leave traces in a model: torchvision's AnchorGenerator caches its anchors
as `self.cell_anchors = [a.to(device) ...]` (then meta tensors, and the next real forward fails); a module may
count its calls, cache shapes, or register buffers lazily. `untouched(model)` snapshots every module's
attributes (one level deep for lists, dicts and sets), parameters, buffers, submodules, hooks, training flag
and class (a lazy module stays lazy), and restores whatever the run replaced, added or removed.
"""
from __future__ import annotations

import contextlib
import operator
from collections import OrderedDict
from typing import Any, Iterator

from torch import nn

from cnnprof.errors import CnnprofError

_CONTAINERS = frozenset((dict, OrderedDict, list, set))  # what a module keeps its state in, one level deep
# torch's hook tables: the tracer's own hooks come and go there (removed by their handles); a forward does not
# touch them, so their contents are not copied (their objects are still put back like every attribute)
_HOOK_TABLES = frozenset(("_backward_pre_hooks", "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
                          "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
                          "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                          "_load_state_dict_post_hooks"))


def _unchanged(container: Any, copy: Any) -> bool:
    """Whether a container holds the same items (the same objects, in the same places) as its copy (None: it
    was empty)."""
    if copy is None:
        return not container
    if len(container) != len(copy):
        return False
    if isinstance(container, dict):
        return container.keys() == copy.keys() and all(map(operator.is_, container.values(), copy.values()))
    if isinstance(container, set):
        return container == copy
    return all(map(operator.is_, container, copy))


def _save(module: nn.Module) -> tuple:
    """(module, its class, its attributes, (container, copy) for each container attribute)."""
    state = module.__dict__
    return (module, type(module), dict(state),
            [(v, v.copy() if v else None) for k, v in state.items() if type(v) in _CONTAINERS and k not in _HOOK_TABLES])


def _restore(saved: tuple) -> None:
    """A module's class, attributes and containers back to what `_save` saw."""
    module, cls, attrs, containers = saved
    if type(module) is not cls:
        module.__class__ = cls  # a lazy module turns into its eager class on its first forward
    state = module.__dict__
    if state.keys() != attrs.keys() or not all(map(operator.is_, state.values(), attrs.values())):
        state.clear()
        state.update(attrs)  # attributes replaced, added or removed by the run
    for container, copy in containers:
        if not _unchanged(container, copy):
            container.clear()
            if copy is not None:
                container.update(copy) if isinstance(container, (dict, set)) else container.extend(copy)


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Run the block, then put every module of `model` back as it was (see the module docstring)."""
    saved = [_save(m) for m in model.modules()]
    try:
        yield
    finally:
        for entry in saved:
            _restore(entry)


def check_initialised(label: str, net: nn.Module) -> None:
    """Refuse a model with lazy modules not yet initialised: their weights have no shape until a real forward,
    and counting must not initialise them (the model is the user's, and stays as it is)."""
    from itertools import chain

    from torch.nn.parameter import is_lazy

    if not any(map(is_lazy, chain(net.parameters(), net.buffers()))):
        return
    lazy = [name for name, m in net.named_modules()
            if any(is_lazy(t) for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])]
    raise CnnprofError(f"{label}: lazy modules not initialised yet ({', '.join(lazy[:3])}"
                       f"{', ...' if len(lazy) > 3 else ''}): run one forward pass first, then count it")
