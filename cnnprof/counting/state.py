"""Counting never changes a user's model: every module's state is put back as it was after the traced run.

A forward pass on meta tensors can leave traces in a model: torchvision's AnchorGenerator caches its anchors
as `self.cell_anchors = [a.to(device) ...]` (then meta tensors, and the next real forward fails); a module may
count its calls, cache shapes, or register buffers lazily. `untouched(model)` snapshots every module's
attributes (one level deep for lists, dicts and sets), parameters, buffers, submodules, hooks, training flag
and class (a lazy module stays lazy), and restores whatever the run replaced, added or removed.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

from torch import nn

from cnnprof.errors import CnnprofError

def _is_container(value: Any) -> bool:
    return isinstance(value, (list, dict, set))


def _snapshot(value: Any) -> Any:
    """A copy one level deep of a mutable container (its items are the same objects); the value otherwise."""
    return copy.copy(value) if _is_container(value) else value


def _same_items(container: Any, snapshot: Any) -> bool:
    """Whether a container still holds exactly the items of its snapshot (the same objects)."""
    if len(container) != len(snapshot):
        return False
    if isinstance(container, dict):
        return container.keys() == snapshot.keys() and all(container[k] is snapshot[k] for k in snapshot)
    if isinstance(container, set):
        return container == snapshot
    return all(a is b for a, b in zip(container, snapshot))


def _restore(module: nn.Module, saved: dict[str, tuple[Any, Any]]) -> None:
    """Every attribute of `module` back to the object it was, a container back to its items."""
    state = module.__dict__
    for key in [k for k in state if k not in saved]:
        del state[key]  # added by the run
    for key, (original, snapshot) in saved.items():
        if _is_container(original) and not _same_items(original, snapshot):
            original.clear()
            original.update(snapshot) if isinstance(original, (dict, set)) else original.extend(snapshot)
        state[key] = original


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Run the block, then put every module of `model` back as it was (see the module docstring)."""
    modules = list(model.modules())
    classes = [type(m) for m in modules]  # a lazy module turns into its eager class on its first forward
    saved = [{k: (v, _snapshot(v)) for k, v in m.__dict__.items()} for m in modules]
    try:
        yield
    finally:
        for module, cls, state in zip(modules, classes, saved):
            if type(module) is not cls:
                module.__class__ = cls
            _restore(module, state)


def check_initialised(label: str, net: nn.Module) -> None:
    """Refuse a model with lazy modules not yet initialised: their weights have no shape until a real forward,
    and counting must not initialise them (the model is the user's, and stays as it is)."""
    from torch.nn.parameter import is_lazy

    lazy = [name for name, m in net.named_modules()
            if any(is_lazy(t) for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])]
    if lazy:
        raise CnnprofError(f"{label}: lazy modules not initialised yet ({', '.join(lazy[:3])}"
                           f"{', ...' if len(lazy) > 3 else ''}): run one forward pass first, then count it")
