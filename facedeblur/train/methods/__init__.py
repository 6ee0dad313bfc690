"""Training wrappers, one per method, registered by architecture name (explicit list, no scanning).

``@register_method("my_arch")`` on a :class:`~facedeblur.train.methods.base.TrainingMethod` subclass makes the
generic trainer train architecture ``my_arch`` with it. The wrapper modules are imported by
:func:`_ensure_loaded` when a wrapper is first asked for; add one import line there per method.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from ...errors import CapabilityError
from .base import StepContext, TrainingMethod, make_optimizer, set_requires_grad, unwrap

__all__ = ["TrainingMethod", "StepContext", "register_method", "unregister_method", "get_method", "list_methods",
           "registry_scope", "make_optimizer", "set_requires_grad", "unwrap"]

M = TypeVar("M", bound=type)

_METHODS: dict[str, type[TrainingMethod]] = {}


def _ensure_loaded() -> None:
    """Import the wrapper modules so their ``@register_method`` decorators run."""
    from . import cfmd_gan  # noqa: F401
    from . import chrysos  # noqa: F401
    from . import cyclegan  # noqa: F401
    from . import dfpgnet  # noqa: F401
    from . import finenet  # noqa: F401
    from . import srn  # noqa: F401


def register_method(arch: str) -> Callable[[M], M]:
    """Class decorator registering a :class:`TrainingMethod` subclass as the training wrapper of architecture
    ``arch`` (the name given to ``register_model``)."""
    from ...data.kinds import check_kind

    def deco(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, TrainingMethod)):
            raise TypeError(f"@register_method({arch!r}) decorates TrainingMethod subclasses, not {cls!r}")
        if arch in _METHODS and _METHODS[arch] is not cls:
            raise ValueError(f"architecture {arch!r} has two training wrappers: {_METHODS[arch].__name__} and "
                             f"{cls.__name__}")
        check_kind(cls.sample_kind)
        if cls.val_kind is not None:
            check_kind(cls.val_kind)
        _METHODS[arch] = cls
        return cls

    return deco


def unregister_method(arch: str) -> type[TrainingMethod] | None:
    """Remove the wrapper of ``arch`` (tests); returns it, or None if there was none."""
    return _METHODS.pop(arch, None)


@contextmanager
def registry_scope() -> Iterator[None]:
    """Wrappers registered inside the block are removed at its end, and replaced ones restored (tests). The
    package's own wrappers are loaded first, so the block does not capture (and then drop) them."""
    _ensure_loaded()
    saved = dict(_METHODS)
    try:
        yield
    finally:
        _METHODS.clear()
        _METHODS.update(saved)


def get_method(arch: str) -> type[TrainingMethod]:
    """The training wrapper class of architecture ``arch``; :class:`~facedeblur.errors.CapabilityError` if none."""
    _ensure_loaded()
    try:
        return _METHODS[arch]
    except KeyError:
        raise CapabilityError(f"architecture {arch!r} has no training wrapper (wrappers exist for "
                              f"{', '.join(sorted(_METHODS)) or 'none'}); write a TrainingMethod subclass and "
                              f"register it with @register_method({arch!r}) (docs/adding_a_model.md, training)"
                              ) from None


def list_methods() -> list[str]:
    """Architectures that have a training wrapper."""
    _ensure_loaded()
    return sorted(_METHODS)
