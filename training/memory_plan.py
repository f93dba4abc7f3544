"""Per-GPU training memory under ZeRO stages 0-3: model states and activations, and the stage to use.

Model states (bytes per parameter P, N = data-parallel GPUs, L = parameters of the largest layer).
Mixed precision (bf16 / fp16) Adam keeps 16-bit weights (2) and gradients (2), and for the
optimizer an fp32 master copy (4) and two fp32 moments (8): the textbook 16 bytes/param. DeepSpeed
also keeps an fp32 copy of the gradient partition (4) for the optimizer step, so its own
estimators count 2 + 18 bytes; we use its accounting so the figures agree with
`estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs` (no offload):

    stage 0   2P + 2P + 16P          nothing partitioned
    stage 1   2P + 2P + 16P/N        optimizer states (+ fp32 grads) partitioned
    stage 2   2P + 18P/N             + 16-bit gradients partitioned        (= DeepSpeed ZeRO-2)
    stage 3   4L + 18P/N             + weights partitioned; one layer live  (= DeepSpeed ZeRO-3)

fp32 training has no 16-bit copies: weights 4 + gradients 4 + moments 8 = 16 bytes/param,
partitioned the same way (stage 3: 4L + 16P/N).

Activations (not partitioned by ZeRO; they scale with the per-GPU micro-batch). Measured, not
guessed: the network is built on the meta device (no memory), a training-mode forward runs at
batch 1 and 2 under `saved_tensors_hooks`, and the bytes of the distinct tensors autograd saves
for backward are summed; the difference between the two batches is the per-example activation
memory (weights that autograd also saves cancel out). It is measured in fp32 and halved for
bf16/fp16 (norms and softmax kept in fp32 make this a slight under-estimate). With activation
checkpointing each UNet / transformer block keeps only its input, and one block at a time is
recomputed: checkpointed = saved outside blocks + sum(block inputs) + max(block saved).
GB here is 2**30 bytes, as DeepSpeed's estimators print.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

GB = 2**30
STAGES = (0, 1, 2, 3)
PRECISIONS = ("bf16", "fp16", "fp32")
HEADROOM = 0.15  # of --gpu-mem, left for the CUDA context, allocator fragmentation and comm buffers
# Modules that activation checkpointing wraps (training.nn: UNet blocks, text transformer blocks).
CHECKPOINT_UNITS = ("TimestepEmbedSequential", "ResidualAttentionBlock")


@dataclass
class ModelSizes:
    """What the plan needs from a model: parameters and per-example activation bytes (fp32)."""

    params: int
    largest_layer_params: int
    activation_bytes_per_example: int  # no checkpointing
    checkpointed_activation_bytes_per_example: int


@dataclass
class StagePlan:
    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    model_states_gb: float
    activations_gb: float
    total_gb: float
    fits: bool


def model_state_bytes(stage: int, params: int, largest_layer: int, gpus: int,
                      precision: str = "bf16") -> dict[str, int]:
    """Per-GPU bytes of weights, gradients and optimizer state (see module doc).

    Mixed precision: gradients = 16-bit (2) + fp32 partition (4); optimizer = fp32 master (4) +
    moments (8). ZeRO-3 "weights" is the gathered live layer (4L: its 16-bit weight and gradient),
    as in DeepSpeed's estimator, whose 18P/N covers the partitions.
    """
    P, N = params, gpus
    opt_div = N if stage >= 1 else 1  # optimizer states partitioned from stage 1
    grad_div = N if stage >= 2 else 1  # gradients from stage 2
    if precision == "fp32":  # no 16-bit copies: weights 4, gradients 4, moments 8
        weights = 4 * largest_layer + 4 * P / N if stage == 3 else 4 * P
        return {"weights": int(weights), "gradients": int(4 * P / grad_div), "optimizer": int(8 * P / opt_div)}
    if stage == 3:
        weights, grads = 4 * largest_layer, 6 * P / N
    else:
        weights, grads = 2 * P, 2 * P / grad_div + 4 * P / opt_div
    return {"weights": int(weights), "gradients": int(grads), "optimizer": int(12 * P / opt_div)}


def measure_model(model_cfg) -> ModelSizes:
    """Parameter counts and activation bytes per example for `model_cfg`, on the meta device."""
    from training.factory import create_model
    from training.model_info import count_params, example_inputs

    model = create_model(model_cfg, device="meta").train()
    params = count_params(model)[0]
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    one, one_units = _saved_bytes(model, model_cfg, 1, example_inputs)
    two, two_units = _saved_bytes(model, model_cfg, 2, example_inputs)
    per_example = max(0, two - one)
    unit_saved = [b2 - b1 for (b1, _), (b2, _) in zip(one_units, two_units)]
    unit_inputs = [i2 - i1 for (_, i1), (_, i2) in zip(one_units, two_units)]
    if unit_saved:
        checkpointed = per_example - sum(unit_saved) + sum(unit_inputs) + max(unit_saved)
    else:  # no known block structure: no saving assumed
        checkpointed = per_example
    return ModelSizes(params, largest, per_example, max(0, min(per_example, checkpointed)))


def _saved_bytes(model, cfg, batch: int, example_inputs) -> tuple[int, list[tuple[int, int]]]:
    """Bytes autograd saves in one forward at `batch`: total, and (saved, input bytes) per block."""
    import torch

    seen: set[int] = set()
    total = [0]
    units: list[list[int]] = []
    current: list[int] = []  # index of the block being run (blocks are not nested)

    def storage_bytes(t: torch.Tensor) -> int:
        s = t.untyped_storage()
        key = s._cdata  # the storage's identity: views of one tensor are counted once
        if key in seen:
            return 0
        seen.add(key)
        return s.nbytes()

    def pack(t):
        n = storage_bytes(t)
        total[0] += n
        if current:
            units[current[-1]][0] += n
        return t

    def pre(module, args):
        units.append([0, args[0].untyped_storage().nbytes() if args and torch.is_tensor(args[0]) else 0])
        current.append(len(units) - 1)

    def post(module, args, out):
        current.pop()

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()
               if type(m).__name__ in CHECKPOINT_UNITS]
    handles += [m.register_forward_hook(post) for m in model.modules()
                if type(m).__name__ in CHECKPOINT_UNITS]
    try:
        with torch.device("meta"), _fused_attention_on_meta():
            args, kwargs = example_inputs(model, cfg)
            args = tuple(_repeat(a, batch) for a in args)
            kwargs = {k: _repeat(v, batch) for k, v in kwargs.items()}
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total[0], [tuple(u) for u in units]


def _fused_attention_on_meta():
    """Count attention as the fused kernels that train it (flash / memory-efficient, on GPU and
    CPU) do: they keep q, k, v, the output and a log-sum-exp row for backward. On the meta device
    torch falls back to the math path, which would count the L x L attention matrix instead."""
    import unittest.mock

    import torch
    import torch.nn.functional as F

    class FusedAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            out = q.new_empty(*q.shape[:-1], v.shape[-1])
            lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, grad):  # never run: the plan measures forward only
            raise NotImplementedError("memory planning runs forward passes only")

    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        return FusedAttention.apply(q, k, v)

    return unittest.mock.patch.object(F, "scaled_dot_product_attention", attention)


def _repeat(value, batch: int):
    import torch

    if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == 1:
        return value.repeat(batch, *([1] * (value.dim() - 1)))
    return value


def plan_memory(sizes: ModelSizes, *, gpus: int, gpu_mem_gb: float, batch_size: int = 8,
                precision: str = "bf16", activation_checkpointing: bool = False) -> dict:
    """{"zero_stages": {"0".."3": StagePlan as dict}, "recommended_stage": S or None}.

    recommended: the lowest stage whose total fits in gpu_mem_gb minus HEADROOM.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    per_example = (sizes.checkpointed_activation_bytes_per_example if activation_checkpointing
                   else sizes.activation_bytes_per_example)
    act = per_example * batch_size * (1.0 if precision == "fp32" else 0.5)
    budget = gpu_mem_gb * (1 - HEADROOM)
    stages, recommended = {}, None
    for s in STAGES:
        parts = model_state_bytes(s, sizes.params, sizes.largest_layer_params, gpus, precision)
        states = sum(parts.values())
        total = (states + act) / GB
        fits = total <= budget
        if fits and recommended is None:
            recommended = s
        stages[str(s)] = asdict(StagePlan(
            weights_gb=_gb(parts["weights"]), gradients_gb=_gb(parts["gradients"]),
            optimizer_gb=_gb(parts["optimizer"]), model_states_gb=_gb(states), activations_gb=_gb(act),
            total_gb=round(total, 3), fits=fits))
    return {"zero_stages": stages, "recommended_stage": recommended}


def _gb(n: float) -> float:
    return round(n / GB, 3)


def format_plan(name: str, sizes: ModelSizes, plan: dict, *, gpus: int, gpu_mem_gb: float,
                batch_size: int, precision: str, activation_checkpointing: bool) -> str:
    """A readable table of `plan` (GB per GPU)."""
    lines = [
        f"{name}: {sizes.params / 1e6:,.1f}M parameters (largest layer {sizes.largest_layer_params / 1e6:,.2f}M); "
        f"{gpus} GPU(s) x {gpu_mem_gb:g} GB, micro-batch {batch_size}/GPU, {precision}, "
        f"activation checkpointing {'on' if activation_checkpointing else 'off'}",
        f"{'ZeRO':>4} {'weights':>9} {'grads':>9} {'optimizer':>9} {'states':>9} {'activ.':>9} {'total':>9}  fits",
    ]
    for s, p in plan["zero_stages"].items():
        lines.append(f"{s:>4} {p['weights_gb']:>9.2f} {p['gradients_gb']:>9.2f} {p['optimizer_gb']:>9.2f} "
                     f"{p['model_states_gb']:>9.2f} {p['activations_gb']:>9.2f} {p['total_gb']:>9.2f}  "
                     f"{'yes' if p['fits'] else 'no'}")
    rec = plan["recommended_stage"]
    budget = gpu_mem_gb * (1 - HEADROOM)
    if rec is None:
        lines.append(f"no stage fits in {budget:.1f} GB ({gpu_mem_gb:g} GB less {HEADROOM:.0%} headroom): use more "
                     "GPUs, a smaller --batch-size, or --activation-checkpointing")
    else:
        lines.append(f"recommended: ZeRO stage {rec} (lowest stage within {budget:.1f} GB = {gpu_mem_gb:g} GB "
                     f"less {HEADROOM:.0%} headroom)")
    return "\n".join(lines)


def expected_deepspeed_gb(stage: int, params: int, largest_layer: int, gpus: int) -> float | None:
    """DeepSpeed's own per-GPU model-state estimate (GB) for stage 2 or 3, no offload; None otherwise."""
    if stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        return estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=gpus, cpu_offload=False)[1] / GB
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        return estimate_zero3_model_states_mem_needs(params, largest_layer, num_gpus_per_node=gpus,
                                                     cpu_offload=False, cpu_offload_params=False)[1] / GB
    return None


__all__ = ["ModelSizes", "StagePlan", "measure_model", "model_state_bytes", "plan_memory", "format_plan",
           "expected_deepspeed_gb", "GB", "HEADROOM"]
