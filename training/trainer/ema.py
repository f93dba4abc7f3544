"""Exponential moving average of the weights, under any ZeRO stage.

ZeRO 0-2 keep every parameter whole on every rank, so the EMA holds whole float32 copies.
ZeRO-3 partitions parameters: each rank keeps the EMA of its own partition (`param.ds_tensor`),
so EMA memory shrinks with the number of ranks like the weights do; `full_state_dict` gathers the
partitions (a collective) only when an export needs the whole tensors.

    ema = ParameterEMA(engine.module, rate=0.9999)
    ... engine.step(); ema.update()
    state = ema.full_state_dict()        # every rank calls it; {name: float32 tensor} on CPU
"""
from __future__ import annotations

import torch


def is_partitioned(param: torch.nn.Parameter) -> bool:
    """True for a ZeRO-3 parameter (its data lives in `ds_tensor`, one partition per rank)."""
    return hasattr(param, "ds_tensor") and hasattr(param, "ds_numel")


def _local_values(param: torch.nn.Parameter) -> torch.Tensor:
    """What this rank holds of `param`: its ZeRO-3 partition (flat, padded), else the whole tensor."""
    return param.ds_tensor if is_partitioned(param) else param.data


class ParameterEMA:
    """EMA (float32) of a module's trainable parameters; `rate` is the decay per update."""

    def __init__(self, module: torch.nn.Module, rate: float):
        self.rate = float(rate)
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.shadow = {n: _local_values(p).detach().float().clone() for n, p in self.params}

    def decay(self, step: int | None) -> float:
        """The decay at optimizer step `step` (1-based): `rate`, warmed up as min(rate, (1+n)/(10+n))
        when a step is given, so a short run's EMA is not dominated by the random initial weights."""
        if step is None:
            return self.rate
        return min(self.rate, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, step: int | None = None) -> None:
        """shadow <- d * shadow + (1 - d) * param (d = `decay(step)`), for every parameter's local values."""
        d = self.decay(step)
        for name, p in self.params:
            self.shadow[name].lerp_(_local_values(p).detach().float(), 1.0 - d)

    # ---- checkpointing: each rank saves and loads its own local shadow ---------------------------
    def local_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().cpu() for n, t in self.shadow.items()}

    def load_local_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        from shards import UserError

        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise UserError(f"{source}: EMA state lacks parameter {missing[0]!r}")
        for name, t in self.shadow.items():
            if state[name].shape != t.shape:
                raise UserError(f"{source}: EMA parameter {name!r} has shape {tuple(state[name].shape)}, "
                                f"expected {tuple(t.shape)}")
            t.copy_(state[name].to(t))

    # ---- export -----------------------------------------------------------------------------------
    @torch.no_grad()
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Whole float32 EMA tensors on CPU, keyed like the module's parameters.

        Collective under ZeRO-3 (all ranks must call it, in the same order).
        """
        out = {}
        for name, p in self.params:
            shadow = self.shadow[name]
            out[name] = (gather_partition(shadow, p) if is_partitioned(p) else shadow).detach().cpu().clone()
        return out


def gather_partition(local: torch.Tensor, param) -> torch.Tensor:
    """All-gather ZeRO-3 partitions shaped like `param.ds_tensor` into the whole [param.ds_shape] tensor."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    flat = local.reshape(-1)
    if world > 1:
        parts = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(parts, flat.contiguous())
        flat = torch.cat(parts)
    return flat[: param.ds_numel].view(param.ds_shape)
