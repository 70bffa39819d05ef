"""Compare a state dict with a model and explain the differences in one readable report.

Used by `OFAModel.load_state_dict` (so fairseq's trainer path gets it too) and by the checkpoint
loader. The report groups keys by module (layer indices collapsed), guesses which OFA size the
checkpoint is, and names the flags that would explain missing/unexpected keys.
"""

import re
from collections import OrderedDict
from typing import Mapping, Optional

import torch

from .archs import ARCH_SIZES, PUBLISHED_ARCHS
from .resnet import RESNET_DEPTHS

# key fragment -> flag that creates it
FLAG_KEYS = OrderedDict(
    [
        (".attn_ln.", "--scale-attn"),
        (".self_attn_ln.", "--scale-attn"),
        (".cross_attn_ln.", "--scale-attn"),
        (".ffn_layernorm.", "--scale-fc"),
        (".c_attn", "--scale-heads"),
        (".w_resid", "--scale-resids"),
        ("encoder.layernorm_embedding.", "--layernorm-embedding"),
        ("encoder.patch_layernorm_embedding.", "--patch-layernorm-embedding"),
        ("decoder.code_layernorm_embedding.", "--code-layernorm-embedding"),
        ("encoder.type_embedding.", "--add-type-embedding"),
    ]
)
PETL_FRAGMENTS = ("adapter", "lora_", "prompt_encoder", "prefix")


class CheckpointMismatchError(ValueError):
    """A state dict that does not fit the model; `str(err)` is the full grouped report."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


def _group(keys) -> "OrderedDict[str, list[str]]":
    """'encoder.layers.3.fc1.weight' -> group 'encoder.layers.*.fc1', leaf 'weight'."""
    groups: "OrderedDict[str, list[str]]" = OrderedDict()
    for k in keys:
        parts = k.split(".")
        module = ".".join("*" if p.isdigit() else p for p in parts[:-1]) or "(top level)"
        groups.setdefault(module, [])
        if parts[-1] not in groups[module]:
            groups[module].append(parts[-1])
    return groups


def _format_group(keys, limit: int = 25) -> list[str]:
    lines = []
    groups = _group(keys)
    for i, (module, leaves) in enumerate(groups.items()):
        if i == limit:
            lines.append(f"    ... and {len(groups) - limit} more modules")
            break
        n = sum(1 for k in keys if ".".join("*" if p.isdigit() else p for p in k.split(".")[:-1]) == module)
        lines.append(f"    {module}.{{{','.join(leaves)}}}  ({n} keys)")
    return lines


def describe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Sizes read off the keys/shapes: embed dim, layers, heads, FFN, trunk, vocab."""
    info: dict = {}
    emb = state_dict.get("encoder.embed_tokens.weight", state_dict.get("decoder.embed_tokens.weight"))
    if emb is not None:
        info["vocab"], info["embed_dim"] = int(emb.shape[0]), int(emb.shape[1])
    for side in ("encoder", "decoder"):
        idx = {int(m.group(1)) for k in state_dict for m in [re.match(rf"{side}\.layers\.(\d+)\.", k)] if m}
        info[f"{side}_layers"] = max(idx) + 1 if idx else 0
    t = state_dict.get("encoder.token_rel_pos_table_list.0.weight")
    if t is not None:
        info["heads"] = int(t.shape[1])
    f = state_dict.get("encoder.layers.0.fc1.weight")
    if f is not None:
        info["ffn_dim"] = int(f.shape[0])
    depths = []
    for stage in (1, 2, 3):
        idx = {int(m.group(1)) for k in state_dict
               for m in [re.match(rf"encoder\.embed_images\.layer{stage}\.(\d+)\.", k)] if m}
        depths.append(max(idx) + 1 if idx else 0)
    info["resnet_depths"] = tuple(depths)
    names = [n for n, d in RESNET_DEPTHS.items() if d == tuple(depths) and n not in ("resnet34",)]
    info["resnet_type"] = names[0] if names else f"custom {list(depths)}"
    info["flags"] = sorted({flag for frag, flag in FLAG_KEYS.items() if any(frag in k for k in state_dict)})
    return info


def guess_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name of the published size the keys look like, or a 'custom (...)' description."""
    info = describe_state_dict(state_dict)
    for arch in PUBLISHED_ARCHS + ("ofa_nano",):
        s = ARCH_SIZES[arch]
        if (
            info.get("embed_dim") == s["encoder_embed_dim"]
            and info.get("encoder_layers") == s["encoder_layers"]
            and info.get("decoder_layers") == s["decoder_layers"]
            and info.get("resnet_type") == s["resnet_type"]
        ):
            return arch
    return (
        f"custom (C={info.get('embed_dim')}, {info.get('encoder_layers')}+{info.get('decoder_layers')} layers, "
        f"heads={info.get('heads')}, ffn={info.get('ffn_dim')}, trunk={info.get('resnet_type')})"
    )


def _flag_hints(model_keys, ckpt_keys) -> list[str]:
    """Flags whose keys exist on one side only (a size difference alone produces no hint)."""
    hints = []
    for frag, flag in FLAG_KEYS.items():
        in_ckpt = any(frag in k for k in ckpt_keys)
        in_model = any(frag in k for k in model_keys)
        if in_ckpt and not in_model:
            hints.append(f"checkpoint has '{frag.strip('.')}' keys: build the model with {flag}")
        elif in_model and not in_ckpt:
            hints.append(f"checkpoint lacks '{frag.strip('.')}' keys: build the model without {flag}"
                         + (" (--bare-arch-defaults)" if flag in ("--scale-attn", "--scale-fc", "--scale-heads") else ""))
    petl_ckpt = any(f in k for k in ckpt_keys for f in PETL_FRAGMENTS)
    petl_model = any(f in k for k in model_keys for f in PETL_FRAGMENTS)
    if petl_ckpt and not petl_model:
        hints.append("checkpoint holds PETL pieces: enable the matching PETL options (--adapter/--lora/--*-prompt)")
    if petl_model and not petl_ckpt:
        hints.append("model has PETL pieces the checkpoint lacks: list them in model.optional_state_keys")
    return list(OrderedDict.fromkeys(hints))


def compare_state_dict(model_state: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]):
    """→ (missing, unexpected, mismatched[(key, ckpt_shape, model_shape)])."""
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(model_state[k].shape))
        for k in model_state
        if k in state_dict and tuple(state_dict[k].shape) != tuple(model_state[k].shape)
    ]
    return missing, unexpected, mismatched


def mismatch_report(
    model_state: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    strict: bool = True,
    source: Optional[str] = None,
    model_desc: Optional[str] = None,
    original: Optional[Mapping[str, torch.Tensor]] = None,
) -> Optional[CheckpointMismatchError]:
    """None if the state dict fits; else an error whose message is the grouped report.

    Shape mismatches always count; missing/unexpected keys only when `strict`. `original` is the
    checkpoint as read (before keys were filled from the model), used to describe the file.
    """
    original = state_dict if original is None else original
    missing, unexpected, mismatched = compare_state_dict(model_state, state_dict)
    if not strict:
        missing, unexpected = [], []
    if not (missing or unexpected or mismatched):
        return None
    where = f" {source}" if source else ""
    lines = [f"checkpoint{where} does not match the model" + (f" ({model_desc})" if model_desc else "") + ":"]
    lines.append(f"  checkpoint looks like: {guess_arch(original)}; model looks like: {guess_arch(model_state)}")
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)} keys):")
        lines += _format_group(missing)
    if unexpected:
        lines.append(f"  unexpected in the checkpoint ({len(unexpected)} keys):")
        lines += _format_group(unexpected)
    if mismatched:
        lines.append(f"  shape mismatch ({len(mismatched)} keys):")
        for k, a, b in mismatched[:25]:
            lines.append(f"    {k}: checkpoint {list(a)} vs model {list(b)}")
        if len(mismatched) > 25:
            lines.append(f"    ... and {len(mismatched) - 25} more")
    hints = _flag_hints(list(model_state), list(original))
    if hints:
        lines.append("  likely explanation:")
        lines += [f"    - {h}" for h in hints]
    return CheckpointMismatchError("\n".join(lines), missing, unexpected, mismatched)
