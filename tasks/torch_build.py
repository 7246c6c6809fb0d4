"""Build and check a node's torch network from task.model, and draw its initial state.

Ours and users' factories go through the same path: registry entry, import, call, checks
(an nn.Module with trainable float32 parameters whose output on a batch of the dataset's examples
is (batch, num_classes)). Every failure is a ValueError naming task.model.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from .config import TaskConfig
from .initializers import glorot_uniform
from .registry import model_entry, resolve_factory

_PROBE = 2  # examples in the output-shape check


def select_device(name: str) -> torch.device:
    """task.device as a torch device: "auto" is cuda when available; "cuda" must be available."""
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise ValueError('task.device is "cuda" but torch sees no CUDA device (use "cpu" or "auto")')
    return torch.device("cuda" if available else "cpu")


RNG_LOCK = threading.RLock()
"""Held while torch's global random state is swapped for a node's own (`fork_rng`): several
peers of one process (`nodes.per_process`) must not swap it under each other's feet."""


def seed_global(seed: int, device: torch.device) -> None:
    """Seed torch's global random state for a node training on `device`: on the CPU its generator
    alone (the state `torch.manual_seed` gives it, bit for bit), since `torch.manual_seed` also
    queues the seeding of CUDA's, XPU's and MTIA's generators for their lazy start, formatting a
    stack trace for each (6-22 ms, once per peer process); on another device all of them, as
    `torch.manual_seed` does."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _construct(task: TaskConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """Call the factory on a forked torch RNG seeded with `seed`: its own random draws are
    reproducible and the global random state is left as it was. (Building on the meta device
    instead would import sympy through torch.fx: ~45 MB per process.)"""
    entry = model_entry(task.model)
    if not entry.path:
        raise ValueError(f"task.model {task.model!r} is not a torch model")
    factory = resolve_factory(entry.path)
    options = {name: getattr(task, name) for name in entry.options}
    with RNG_LOCK, torch.random.fork_rng(devices=[]):
        seed_global(seed, select_device(task.device))
        try:
            module = factory(tuple(input_shape), num_classes, **options)
        except ValueError as err:
            raise ValueError(f"task.model {task.model!r}: {err}") from err
        except Exception as err:  # a user's factory may fail in any way
            raise ValueError(
                f"task.model {task.model!r}: the factory raised {type(err).__name__}: {err}"
            ) from err
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"task.model {task.model!r}: the factory returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def _check(module: nn.Module, model: str, examples: torch.Tensor, num_classes: int) -> None:
    """Trainable float32 parameters, float32 state, and (batch, num_classes) logits."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"task.model {model!r}: the module has no trainable parameters")
    wrong = [n for n, t in module.state_dict().items() if t.is_floating_point() and t.dtype != torch.float32]
    if wrong:
        raise ValueError(f"task.model {model!r}: tensors {wrong[:3]} are not float32 (the data is)")
    module.eval()
    try:
        with torch.no_grad():
            out = module(examples)
    except Exception as err:
        raise ValueError(
            f"task.model {model!r}: forward on a batch of shape {tuple(examples.shape)} raised "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        module.train()
    expected = (len(examples), num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"task.model {model!r}: the output on a batch of shape {tuple(examples.shape)} must be "
            f"(batch, num_classes) = {expected} logits; got {got}"
        )


def build_module(task: TaskConfig, examples: torch.Tensor, num_classes: int, seed: int) -> nn.Module:
    """The checked network of task.model for examples shaped (N, *input_shape) (a few are run
    through it in eval mode, which leaves BatchNorm statistics untouched)."""
    module = _construct(task, tuple(examples.shape[1:]), num_classes, seed)
    _check(module, task.model, examples[:_PROBE], num_classes)
    return module


def initial_state(module: nn.Module, rng: np.random.Generator) -> list[np.ndarray]:
    """Initial value of every state_dict tensor, in order: parameters with two or more
    dimensions Glorot-uniform from `rng` (drawn in order), `bias` parameters zero, everything
    else (normalisation scales, buffers such as BatchNorm statistics, other parameters) as the
    factory made it."""
    parameters = dict(module.named_parameters())
    out = []
    for name, tensor in module.state_dict().items():
        if name in parameters and tensor.ndim >= 2:
            out.append(glorot_uniform(tuple(tensor.shape), rng))
        elif name in parameters and name.rpartition(".")[2] == "bias":
            out.append(np.zeros(tuple(tensor.shape), np.float32))
        else:
            out.append(tensor.detach().cpu().numpy().copy())
    return out
