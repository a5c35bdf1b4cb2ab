"""Less per-frame overhead in the SAM 2 tracking step: no host sync, optionally compiled parts
(imports torch).

On a GPU a tracked slice is a few hundred small kernels (memory attention over the memory
bank and the object pointers, the mask decoder, the memory encoder), so the time goes to
launching them and to the host waiting for the device, not to arithmetic. Two switches of
:class:`~segloop.engines.sam2.runtime.Runtime`, both installed on the model once by
:func:`install_fast_step` and read at call time, so one model can be measured with them on
and off side by side:

- ``sync_free``: the object pointers' temporal offsets (a Python list that ``transformers``
  turns into a device tensor on every frame, i.e. one blocking host->device copy per slice)
  are made once per distinct list and kept on the device. Same values, same masks. (The
  session adds the rest: frames uploaded once, the memory bank kept on the device, masks
  copied back asynchronously.)
- ``compile``: ``torch.compile`` of the memory attention, the prompt encoder, the mask
  decoder and the memory encoder, active only while a propagation tracks slices
  (conditioning slices and 2D prompts run eagerly). On CUDA the mode is ``reduce-overhead``
  (CUDA graphs: one launch per part instead of hundreds); tensor outputs are copied out of
  the graphs' static buffers before ``transformers`` keeps them in its memory bank. Shapes
  change while the memory bank fills (first ~16 slices of each direction), then stay fixed:
  the first change makes dynamo recompile the memory attention with a dynamic memory length
  (once), and CUDA graph trees record one graph per length. If compiling fails (no
  compiler, an unsupported op) the part falls back to eager for good and logs why, once.

Masks are the same as the eager step's up to floating-point reassociation in the fused
kernels (tests: per-slice IoU >= 0.999 on random weights).
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["CompiledPart", "FastStep", "install_fast_step"]

log = logging.getLogger(__name__)

#: the model parts compiled with ``compile`` on (attribute names of ``Sam2VideoModel``)
COMPILED_PARTS = ("memory_attention", "prompt_encoder", "mask_decoder", "memory_encoder")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _one_line(exc: BaseException) -> str:
    """A compiler failure in one line: the exception and the error it wraps, if any."""
    cause = getattr(exc, "inner_exception", None) or exc.__cause__
    if isinstance(cause, BaseException):
        return f"{type(exc).__name__} ({type(cause).__name__}: {_first_line(cause)})"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _clone_tensors(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, tuple):
        return tuple(_clone_tensors(o) for o in out)
    if isinstance(out, list):
        return [_clone_tensors(o) for o in out]
    return out


class CompiledPart:
    """A module's ``forward`` that runs compiled while :attr:`active`, eager otherwise.

    Compiled lazily on the first active call; ``failed`` (with ``reason``) once compiling
    raised, after which the part stays eager."""

    def __init__(self, name: str, eager: Callable[..., Any], device: torch.device,
                 backend: str | Callable[..., Any] = "inductor") -> None:
        self.name = name
        self.eager = eager
        self.device = device
        self.backend = backend
        self.active = False
        self.failed = False
        self.reason = ""
        self.calls = 0
        self._compiled: Callable[..., Any] | None = None

    @property
    def mode(self) -> str:
        """``reduce-overhead`` (CUDA graphs) on CUDA, inductor's ``default`` elsewhere."""
        return "reduce-overhead" if self.device.type == "cuda" else "default"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.active or self.failed:
            return self.eager(*args, **kwargs)
        if self._compiled is None:
            self._compiled = (torch.compile(self.eager, mode=self.mode)
                              if self.backend == "inductor"
                              else torch.compile(self.eager, backend=self.backend))
        graphs = self.device.type == "cuda"
        try:
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            out = self._compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # any compiler failure means: run eager
            self.failed = True
            self.reason = _one_line(exc)
            log.warning("torch.compile of %s failed, running it eagerly: %s", self.name,
                        self.reason)
            return self.eager(*args, **kwargs)
        self.calls += 1
        # CUDA graphs reuse their output buffers on the next replay: the memory bank keeps
        # these tensors, so they must be copies
        return _clone_tensors(out) if graphs else out


class FastStep:
    """The switches installed on one model (see the module docstring)."""

    def __init__(self, model: Any, device: torch.device) -> None:
        self.sync_free = False
        self.parts: dict[str, CompiledPart] = {}
        for name in COMPILED_PARTS:
            module = getattr(model, name)
            part = CompiledPart(name, module.forward, device)
            module.forward = part
            self.parts[name] = part
        self._offsets: dict[tuple[tuple[int, ...], int, str], torch.Tensor] = {}

    def set_compiled(self, active: bool) -> None:
        """Run the compiled parts (True) or the eager ones (False) from now on."""
        for part in self.parts.values():
            part.active = active

    @contextmanager
    def tracking(self, sync_free: bool, compiled: bool) -> Iterator[None]:
        """The switches on for one tracked slice's forward pass, off again afterwards."""
        self.sync_free = sync_free
        self.set_compiled(compiled)
        try:
            yield
        finally:
            self.sync_free = False
            self.set_compiled(False)

    @property
    def cached_offsets(self) -> int:
        """Distinct object-pointer offset lists made on the device so far (``sync_free``)."""
        return len(self._offsets)

    @property
    def compile_failures(self) -> dict[str, str]:
        """Parts whose compilation failed and why (empty when none did)."""
        return {n: p.reason for n, p in self.parts.items() if p.failed}

    def offsets(self, temporal_offsets: list[int], max_pointers: int, device: torch.device
                ) -> torch.Tensor:
        """``temporal_offsets / (max_pointers - 1)`` as a float32 device tensor, made once."""
        key = (tuple(temporal_offsets), max_pointers, str(device))
        t = self._offsets.get(key)
        if t is None:
            if len(self._offsets) >= 256:
                self._offsets.clear()
            t = self._offsets[key] = (torch.tensor(temporal_offsets, device=device,
                                                   dtype=torch.float32)
                                      / float(max_pointers - 1))
        return t


def install_fast_step(model: Any, device: torch.device) -> FastStep:
    """Install the switches on ``model`` once (idempotent) and return them (all off)."""
    existing = getattr(model, "_segloop_fast_step", None)
    if isinstance(existing, FastStep):
        return existing
    from transformers.models.sam2_video import modeling_sam2_video as tm

    fast = FastStep(model, device)
    original = model._process_object_pointers

    def process_object_pointers(temporal_offsets: list[int], pointer_tokens: list[torch.Tensor],
                                max_object_pointers_to_use: int, batch_size: int,
                                num_channels: int, device: torch.device
                                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``Sam2VideoModel._process_object_pointers`` with the offsets tensor memoised
        (the same code as transformers 5.17-5.23 otherwise)."""
        if not fast.sync_free or not pointer_tokens:
            return original(temporal_offsets, pointer_tokens, max_object_pointers_to_use,  # type: ignore[no-any-return]
                            batch_size, num_channels, device)
        object_pointers = torch.stack(pointer_tokens, dim=0)
        if model.config.enable_temporal_pos_encoding_for_object_pointers:
            diffs = fast.offsets(temporal_offsets, max_object_pointers_to_use, device)
            sine_pe = tm.get_1d_sine_pe(diffs, dim=num_channels).to(object_pointers.dtype)
            projected = model.temporal_positional_encoding_projection_layer(sine_pe)
            pos = projected.unsqueeze(1).expand(-1, batch_size, model.mem_dim)
        else:
            pos = object_pointers.new_zeros(len(temporal_offsets), batch_size, model.mem_dim,
                                            dtype=object_pointers.dtype)
        if model.mem_dim < num_channels:
            splits = num_channels // model.mem_dim
            object_pointers = object_pointers.reshape(-1, batch_size, splits, model.mem_dim)
            object_pointers = object_pointers.permute(0, 2, 1, 3).flatten(0, 1)
            pos = pos.repeat_interleave(splits, dim=0)
        return object_pointers, pos

    model._process_object_pointers = process_object_pointers
    model._segloop_fast_step = fast
    return fast
