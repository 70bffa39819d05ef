"""LoRA: low-rank updates of ``nn.Linear`` projections, with an explicit merge contract."""

from .layer import LoRALinear
from .merge import lora_modules, merge_and_unload, merge_lora, unmerge_lora

__all__ = ["LoRALinear", "lora_modules", "merge_and_unload", "merge_lora", "unmerge_lora"]
