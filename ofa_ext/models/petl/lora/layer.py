"""LoRA on an ``nn.Linear``: ``y = W x + b + scale · B A dropout(x)``, scale = alpha / r.

The wrapper *is* an ``nn.Linear`` and keeps ``weight``/``bias`` under their own names, so official
OFA keys load unchanged and π-Tuning's ``lora_A``/``lora_B`` keys sit beside them
(`specs/pi_tuning.md` §3.2). Unlike loralib it never merges itself on ``eval()``: merging is an
explicit call, done in fp32, and ``unmerge()`` restores the stored base weight bit for bit.
While merged, ``state_dict()`` still writes the *base* weight, so a saved model can never add the
delta twice after a reload.

A mix of K experts (π-Tuning's ``--lora-num``, ``Σ_k w_k B_k A_k``) is this same layer with
``lora_A`` = [A_1; …; A_K] ([K·r, in]) and ``lora_B`` = [w_1 B_1 … w_K B_K] ([out, K·r]), which the
interpolation provides; :meth:`use_expert_dropouts` then gives each expert its own input dropout.
"""

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` with a low-rank trainable update (``lora_A`` [r, in], ``lora_B`` [out, r])."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int,
        alpha: float = 1.0,
        dropout: float = 0.0,
        bias: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if r <= 0:
            raise ValueError(f"lora_r must be > 0, got {r}")
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, r, device=device, dtype=dtype))
        self.merged = False
        self.expert_dropouts: Optional[nn.ModuleList] = None
        self.reset_lora_parameters()

    @classmethod
    def from_linear(cls, base: nn.Linear, r: int, alpha: float = 1.0, dropout: float = 0.0) -> "LoRALinear":
        """Wrap ``base``: its ``weight``/``bias`` Parameters are reused (not copied)."""
        w = base.weight
        layer = cls(base.in_features, base.out_features, r, alpha, dropout, bias=False, device="meta")
        layer.weight = w
        layer.bias = base.bias
        layer.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        layer.lora_B = nn.Parameter(torch.empty(base.out_features, r, device=w.device, dtype=w.dtype))
        layer.reset_lora_parameters()
        return layer

    def use_expert_dropouts(self, rates: Optional[Sequence[float]]) -> None:
        """One input dropout per expert block of ``lora_A``/``lora_B`` (``None``: the layer's own).

        π-Tuning keeps K separate LoRA layers, each dropping its own copy of the input."""
        self.expert_dropouts = None if rates is None else nn.ModuleList(
            nn.Dropout(p) if p > 0 else nn.Identity() for p in rates)

    def reset_lora_parameters(self) -> None:
        """A: kaiming-uniform(a=√5) as loralib; B: zeros, so a fresh layer equals its base."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    # --- merge contract -------------------------------------------------------------------
    def _compute_dtype(self) -> torch.dtype:
        return torch.promote_types(self.weight.dtype, torch.float32)  # fp16/bf16 -> fp32; fp64 stays

    def get_delta_weight(self) -> torch.Tensor:
        """``scale · B A`` in at least fp32 (shape of ``weight``)."""
        dt = self._compute_dtype()
        return (self.lora_B.to(dt) @ self.lora_A.to(dt)) * self.scaling

    def merge(self, safe_merge: bool = True) -> None:
        """Add the delta into ``weight`` (computed in fp32); keep the base weight for unmerge."""
        if self.merged:
            return
        with torch.no_grad():
            merged = (self.weight.to(self._compute_dtype()) + self.get_delta_weight()).to(self.weight.dtype)
        if safe_merge and not torch.isfinite(merged).all():  # checked after the cast: fp16 overflow
            raise ValueError(f"LoRA merge produced non-finite values (weight shape {tuple(self.weight.shape)})")
        self.register_buffer("_base_weight", self.weight.detach().clone(), persistent=False)
        with torch.no_grad():
            self.weight.copy_(merged)
        self.merged = True

    def unmerge(self) -> None:
        """Restore the exact base weight stored by :meth:`merge`."""
        if not self.merged:
            return
        with torch.no_grad():
            self.weight.copy_(self._base_weight)
        del self._base_weight
        self.merged = False

    def merge_and_unload(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding ``W + scale·BA`` (this layer is left unchanged)."""
        w = self.weight
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        base = self._base_weight if self.merged else w.detach()
        merged = base.to(self._compute_dtype()) + self.get_delta_weight().detach()
        if not torch.isfinite(merged).all():
            raise ValueError(f"LoRA merge produced non-finite values (weight shape {tuple(w.shape)})")
        out.weight = nn.Parameter(merged.to(w.dtype), requires_grad=w.requires_grad)
        if self.bias is not None:
            out.bias = self.bias
        return out

    # --- forward / state ------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        A, B = self.lora_A, self.lora_B  # [R, in], [out, R]; R = r, or K·r for a mix of K experts
        drops = self.expert_dropouts
        if drops is None:
            h = F.linear(self.lora_dropout(x), A)  # x·Aᵀ first: never the [out, in] delta
        elif self.training and any(isinstance(d, nn.Dropout) for d in drops):
            h = torch.cat([F.linear(d(x), a) for d, a in zip(drops, A.chunk(len(drops)))], -1)  # [.., K·r]
        else:
            h = F.linear(x, A)
        return y + F.linear(h, B) * self.scaling

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.merged:  # write the base weight: the delta lives in lora_A/lora_B
            destination[prefix + "weight"] = self._base_weight if keep_vars else self._base_weight.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.unmerge()  # loaded tensors are always unmerged ones
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}, merged={self.merged}"
