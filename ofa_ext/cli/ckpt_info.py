"""ofa-ckpt-info: what is inside an OFA checkpoint, or what an arch would contain.

    ofa-ckpt-info ofa_base.pt                 # arch guess, parameter count, stored flags, key summary
    ofa-ckpt-info ofa_base.pt --json          # the same as JSON
    ofa-ckpt-info --arch ofa_large --json     # build on the meta device (no weights): {"arch","params","shapes"}

Parameters are counted once per storage (the tied embedding once); buffers are not parameters.
"""

import argparse
import json
import sys
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..utils.errors import cli_entry

BUFFER_LEAVES = ("version", "token_rp_bucket", "image_rp_bucket", "image_position_idx",
                 "running_mean", "running_var", "num_batches_tracked")


def arch_info(arch: str, dict_size: int, bare: bool = False) -> Dict[str, Any]:
    """Build `arch` on the meta device; return its unique parameter count and state-dict shapes."""
    from ofa_ext.models.ofa.archs import canonical_arch
    from ofa_ext.models.ofa.placeholder_dict import SizedDictionary
    from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config

    name = canonical_arch(arch)
    cfg = to_ofa_config({"_name": name}, script_flags=not bare)
    with torch.device("meta"):
        model = OFAFairseqModel.build_from_config(cfg, SizedDictionary(dict_size))
    params = sum(p.numel() for p in model.parameters())  # parameters() yields each tied tensor once
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {"arch": name, "params": params, "shapes": shapes}


def checkpoint_info(path: str, allow_unsafe_pickle: bool = False) -> Dict[str, Any]:
    """Arch guess, unique parameter count and a per-module key summary of a checkpoint file."""
    from ofa_ext.models.ofa.checkpoint import _plain, read_checkpoint, stored_model_config
    from ofa_ext.models.ofa.mismatch import describe_state_dict, guess_arch

    state = read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    sd: Mapping[str, torch.Tensor] = state["model"]
    seen, params = set(), 0
    for k, t in sd.items():
        if k.rsplit(".", 1)[-1] in BUFFER_LEAVES or not torch.is_tensor(t):
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            params += t.numel()
    stored = _plain(stored_model_config(state))
    modules = Counter(".".join(p for p in k.split(".")[:2]) for k in sd)
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in sd.values() if torch.is_tensor(t))
    flags = {k: stored[k] for k in ("scale_attn", "scale_fc", "scale_heads", "disable_entangle") if k in stored}
    return {
        "path": path,
        "arch_guess": guess_arch(sd),
        "stored_arch": stored.get("_name") or stored.get("arch"),
        "params": params,
        "num_keys": len(sd),
        "sizes": {k: v for k, v in describe_state_dict(sd).items() if k != "flags"},
        "flags_from_keys": describe_state_dict(sd)["flags"],
        "stored_flags": flags,
        "dtypes": dict(dtypes),
        "modules": dict(modules),
        "entries": sorted(state.keys()),
    }


def _print_text(info: Dict[str, Any]) -> None:
    print(f"file:        {info['path']}")
    print(f"arch guess:  {info['arch_guess']}  (stored arch: {info['stored_arch']})")
    print(f"parameters:  {info['params']:,} (tied embedding counted once)")
    print(f"keys:        {info['num_keys']}  dtypes: {info['dtypes']}")
    print(f"sizes:       {info['sizes']}")
    print(f"flags:       from keys {info['flags_from_keys']}; stored {info['stored_flags']}")
    print("modules:")
    for m, n in info["modules"].items():
        print(f"  {m:40s} {n:5d} keys")


@cli_entry("ofa-ckpt-info")
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ofa-ckpt-info", description=__doc__.split("\n")[0])
    p.add_argument("path", nargs="?", help="checkpoint file (.pt)")
    p.add_argument("--arch", help="describe an arch instead of a file (built on the meta device)")
    p.add_argument("--dict-size", type=int, default=None, help="dictionary size for --arch (default: OFA's 59457)")
    p.add_argument("--bare", action="store_true", help="with --arch: OFA's bare arch defaults, not the run-script flags")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--allow-unsafe-pickle", action="store_true", help="read files pickling arbitrary objects (trusted files only)")
    args = p.parse_args(argv)
    if (args.path is None) == (args.arch is None):
        p.error("give either a checkpoint PATH or --arch NAME")
    from ofa_ext.models.ofa.archs import OFA_DICT_SIZE

    if args.arch:
        info = arch_info(args.arch, args.dict_size or OFA_DICT_SIZE, bare=args.bare)
        if args.json:
            print(json.dumps(info))
        else:
            print(f"{info['arch']}: {info['params']:,} parameters, {len(info['shapes'])} state-dict keys")
        return 0
    info = checkpoint_info(args.path, args.allow_unsafe_pickle)
    if args.json:
        print(json.dumps(info))
    else:
        _print_text(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
