"""Expert interpolation (π-Tuning step 3): every piece tensor becomes a learned mix of K experts.

For every PETL piece parameter θ of an already-PETL-injected model::

    θ = Σ_k w_k · θ_k,        w = softmax(logits)            (one logits row per group)

where θ_1 … θ_K are the same tensor in K expert piece files. π-Tuning mixes the *outputs* of K
adapters (``specs/pi_tuning.md`` §6.1), which for one slot equals an adapter whose parameters are the
convex combination — so mixing parameters is the same model, K times cheaper. Because only named
tensors are seen, adapters, LoRA factors, prefix tables and BitFit biases are mixed alike.

Mechanism: ``torch.nn.utils.parametrize`` on each piece parameter. The parametrization holds the K
stacked experts ``[K, *shape]`` (trainable or frozen) and reads the logits from one
:class:`MixWeights` module registered on the model as ``expert_mix``; the original tensor stays as a
frozen, unused ``parametrizations.<name>.original``. A plain (non-interpolated) checkpoint still loads:
its piece values are routed to ``original``.

Granularity (how many logits rows):

* ``model`` (default): one K-vector for the whole model;
* ``layer``: one per ``{encoder,decoder}.layers.N``;
* ``slot``: one per module directly below a layer (``…layers.N.post_attn`` for an adapter slot,
  ``…layers.N.self_attn`` for the LoRA factors of one attention module) — π-Tuning's own
  granularity for adapters and LoRA;
* ``tensor``: one per tensor.

Tensors outside the layers (prefix tables, final LayerNorm biases) form a group per owning module
under ``layer``/``slot``.

Initial logits: ``uniform`` (all 0, w = 1/K; π-Tuning's all-ones is the same softmax), ``logits``
(raw values, π-Tuning's ``--init-scale``) or ``similarity``: ``logits_k = log(s_k) / T`` so that
``w_k ∝ s_k^(1/T)`` (T = 1: weights = normalised similarities; T → 0: the most similar expert only).
The temperature is used only to initialise.

Composition is data: :class:`ExpertMix` (piece files, logits, strategy, granularity, training flags)
round-trips through JSON; :func:`current_mix` snapshots a trained model.
"""


import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from fairseq.dataclass import FairseqDataclass
from torch import Tensor, nn
from torch.nn.utils import parametrize

logger = logging.getLogger(__name__)

STRATEGIES = ("interpolate",)
INITS = ("uniform", "similarity", "logits")
GRANULARITIES = ("model", "layer", "slot", "tensor")
_GROUP_PATTERNS = {
    "layer": re.compile(r"(?:encoder|decoder)\.layers\.\d+"),
    "slot": re.compile(r"(?:encoder|decoder)\.layers\.\d+\.[^.]+"),
}
MIX_ATTR = "expert_mix"


# ------------------------------------------------------------------------------------------ config


@dataclass
class InterpolationConfig(FairseqDataclass):
    interpolation_experts: str = field(
        default="", metadata={"help": "comma list of expert piece files (.safetensors) to interpolate; empty: off"}
    )
    interpolation_init: str = field(
        default="uniform", metadata={"help": "initial weights: uniform | similarity | logits"}
    )
    interpolation_similarities: Optional[str] = field(
        default=None,
        metadata={"help": "similarity of each expert to the target: comma list of floats (expert order) or a "
                          "JSON file from ofa-task-similarity --target (experts matched by task name)"},
    )
    interpolation_logits: Optional[str] = field(
        default=None, metadata={"help": "comma list of K raw initial logits (π-Tuning --init-scale)"}
    )
    interpolation_temperature: float = field(
        default=1.0, metadata={"help": "similarity init: logits = log(similarity) / temperature"}
    )
    interpolation_top_k: int = field(
        default=0, metadata={"help": "keep only the k experts most similar to the target (0: all listed)"}
    )
    interpolation_granularity: str = field(
        default="model", metadata={"help": "logits per model | layer | slot (π-Tuning) | tensor"}
    )
    # "freeze" switches default to False: fairseq turns a bool that defaults to True into a flag
    # that switches it off, which would make `--interpolation-train-experts` mean the opposite.
    interpolation_freeze_experts: bool = field(
        default=False, metadata={"help": "keep the experts fixed (π-Tuning's adapter runs train them)"}
    )
    interpolation_freeze_weights: bool = field(
        default=False, metadata={"help": "keep the interpolation logits fixed (π-Tuning trains them, --learnable-scale)"}
    )


def _floats(text: str, option: str) -> List[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{option.replace('_', '-')}={text!r}: expected a comma list of numbers") from None


def _paths(text: str) -> List[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


@dataclass
class ExpertMix:
    """Which piece files are mixed, with which (initial or learned) logits, and how.

    ``logits`` is one K-list used for every group, or ``{group: K-list}`` for per-group values
    (what :func:`current_mix` returns for granularities other than ``model``).
    """

    experts: List[str]
    logits: Union[List[float], Dict[str, List[float]]] = field(default_factory=list)
    strategy: str = "interpolate"
    granularity: str = "model"
    train_experts: bool = True
    train_weights: bool = True
    names: List[str] = field(default_factory=list)  # task names of the experts (informational)

    def validate(self) -> None:
        if not self.experts:
            raise ValueError("expert interpolation needs at least one expert piece file (got none)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"ExpertMix.strategy={self.strategy!r}: expected one of {STRATEGIES}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"--interpolation-granularity={self.granularity!r}: expected one of {GRANULARITIES}")
        rows = self.logits.values() if isinstance(self.logits, dict) else [self.logits]
        for row in rows:
            if row and len(row) != len(self.experts):
                raise ValueError(f"{len(row)} interpolation logits for {len(self.experts)} experts ({self.experts})")

    def weights(self) -> Union[List[float], Dict[str, List[float]]]:
        """softmax of the logits (uniform when none are given)."""
        def sm(row: List[float]) -> List[float]:
            row = row or [0.0] * len(self.experts)
            return torch.tensor(row, dtype=torch.float64).softmax(-1).tolist()

        return {g: sm(r) for g, r in self.logits.items()} if isinstance(self.logits, dict) else sm(self.logits)

    def to_json(self, path: Optional[Union[str, Path]] = None) -> str:
        text = json.dumps(asdict(self), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: Union[str, Path]) -> "ExpertMix":
        src = str(text_or_path)
        text = Path(src).read_text() if not src.lstrip().startswith("{") else src
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ExpertMix JSON ({src[:80]}): {e}") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("ExpertMix JSON: ignoring unknown keys %s", unknown)
        mix = cls(**{k: v for k, v in data.items() if k in known})
        mix.validate()
        return mix


def read_similarities(spec: str, names: Sequence[str]) -> List[float]:
    """Similarities of the experts to the target, in expert order.

    ``spec``: a comma list of floats, or a JSON file written by ``ofa-task-similarity --target``
    (``{"target": ..., "similarities": {task: value}}``), matched by the experts' task names.
    """
    if spec.strip().endswith(".json"):
        path = Path(spec.strip())
        if not path.is_file():
            raise FileNotFoundError(f"--interpolation-similarities: file not found: {path}")
        data = json.loads(path.read_text())
        table = data.get("similarities")
        if not isinstance(table, dict):
            raise ValueError(f"{path}: expected a JSON object with a 'similarities' mapping task -> value")
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(f"{path}: no similarity for experts {missing} (has {sorted(table)})")
        return [float(table[n]) for n in names]
    values = _floats(spec, "interpolation_similarities")
    if len(values) != len(names):
        raise ValueError(f"--interpolation-similarities has {len(values)} values for {len(names)} experts {list(names)}")
    return values


def similarity_logits(similarities: Sequence[float], temperature: float = 1.0) -> List[float]:
    """``log(s_k) / T``: softmax gives weights ∝ s_k^(1/T)."""
    if temperature <= 0:
        raise ValueError(f"--interpolation-temperature={temperature}: expected > 0")
    bad = [s for s in similarities if not s > 0]
    if bad:
        raise ValueError(f"similarity init needs positive similarities, got {list(similarities)}")
    return [math.log(s) / temperature for s in similarities]


# ---------------------------------------------------------------------------------------- modules


class MixWeights(nn.Module):
    """The interpolation logits ``[G, K]``: one softmax row per group of piece tensors."""

    def __init__(self, logits: Tensor, groups: Sequence[str], mix: ExpertMix):
        super().__init__()
        self.logits = nn.Parameter(logits.clone(), requires_grad=mix.train_weights)
        self.groups = list(groups)
        self.spec = ExpertMix(**{**asdict(mix), "logits": []})  # how it was built (logits live above)
        self.targets: List[Tuple[str, str, int]] = []  # (module name, parameter name, group)
        self.tied: List[Tuple[str, str, str]] = []  # (module name, parameter name, primary full name)
        self.hooks: List[Any] = []  # load-state-dict hooks to remove on unload

    def weights(self) -> Tensor:
        return self.logits.softmax(-1)

    def extra_repr(self) -> str:
        return f"groups={len(self.groups)}, experts={len(self.spec.experts)}, tensors={len(self.targets)}"


class ExpertInterpolation(nn.Module):
    """Parametrization: ``Σ_k softmax(logits[group])_k · experts[k]`` (the original is ignored)."""

    def __init__(self, experts: Tensor, mix: MixWeights, group: int, trainable: bool = True):
        super().__init__()
        self.experts = nn.Parameter(experts, requires_grad=trainable)  # [K, *shape]
        object.__setattr__(self, "_mix", mix)  # a reference, not a submodule: the model owns it
        self.group = group

    def forward(self, original: Tensor) -> Tensor:
        w = self._mix.logits[self.group].softmax(-1).to(self.experts.dtype)  # [K]
        return torch.tensordot(w, self.experts, dims=1)  # [*shape]


# ------------------------------------------------------------------------------------------ loading


def _piece_io():
    from .petl import read_piece_file
    from .petl.config import STRUCTURAL_FIELDS

    return read_piece_file, STRUCTURAL_FIELDS


def load_experts(paths: Sequence[str]) -> Tuple[List[Dict[str, Tensor]], List[Dict[str, Any]]]:
    """Read K piece files and check that they can be mixed (same PETL setup, arch, backbone, layout)."""
    from ..metrics.fisher import layout_difference

    if not paths:
        raise ValueError("--interpolation-experts: no expert piece file given")
    dup = sorted({p for p in paths if list(paths).count(p) > 1})
    if dup:
        raise ValueError(f"--interpolation-experts lists the same file twice: {dup}")
    read_piece_file, structural = _piece_io()
    tensors, metas = [], []
    for p in paths:
        t, m = read_piece_file(p)
        tensors.append(t)
        metas.append(m)
    ref_t, ref_m, ref_p = tensors[0], metas[0], paths[0]
    for t, m, p in zip(tensors[1:], metas[1:], paths[1:]):
        diff = [f"{f}: {getattr(ref_m['petl_config'], f)!r} vs {getattr(m['petl_config'], f)!r}"
                for f in structural if getattr(ref_m["petl_config"], f) != getattr(m["petl_config"], f)]
        if diff:
            raise ValueError(f"experts {ref_p} and {p} use different PETL setups: " + "; ".join(diff))
        if ref_m.get("arch") and m.get("arch") and ref_m["arch"] != m["arch"]:
            raise ValueError(f"experts {ref_p} and {p} were trained on different archs: {ref_m['arch']} vs {m['arch']}")
        dims = [k for k in ref_m["backbone"] if k != "digest" and ref_m["backbone"].get(k) != m["backbone"].get(k)]
        if dims:
            raise ValueError(f"experts {ref_p} and {p} were trained on different backbones ({dims})")
        d = layout_difference(ref_t, t)
        if d:
            raise ValueError(f"experts {ref_p} and {p} have different piece layouts: {d}")
    return tensors, metas


def expert_names(paths: Sequence[str], metas: Sequence[Mapping[str, Any]]) -> List[str]:
    """Task name of each expert: the piece file's ``task`` metadata, else the file stem."""
    return [m.get("task") or Path(p).stem for p, m in zip(paths, metas)]


def mix_from_config(cfg: Any) -> ExpertMix:
    """An :class:`ExpertMix` from the ``interpolation_*`` options (experts not yet selected by top-k)."""
    c = InterpolationConfig(**{f: getattr(cfg, f) for f in InterpolationConfig.__dataclass_fields__ if hasattr(cfg, f)})
    experts = _paths(c.interpolation_experts)
    if c.interpolation_init not in INITS:
        raise ValueError(f"--interpolation-init={c.interpolation_init!r}: expected one of {INITS}")
    return ExpertMix(experts=experts, granularity=c.interpolation_granularity,
                     train_experts=not c.interpolation_freeze_experts, train_weights=not c.interpolation_freeze_weights)


def select_top_k(paths: Sequence[str], similarities: Sequence[float], k: int) -> List[int]:
    """Indices of the k most similar experts (stable for ties), in decreasing similarity."""
    if k <= 0:
        return list(range(len(paths)))
    if k > len(paths):
        raise ValueError(f"--interpolation-top-k={k} is larger than the number of experts ({len(paths)}: {list(paths)})")
    order = sorted(range(len(paths)), key=lambda i: -similarities[i])
    return order[:k]


# ------------------------------------------------------------------------------------------- apply


def _group_of(name: str, granularity: str) -> str:
    if granularity == "model":
        return "*"
    if granularity == "tensor":
        return name
    m = _GROUP_PATTERNS[granularity].match(name)
    return m.group(0) if m else name.rpartition(".")[0]


def _route_plain_keys(pnames: Sequence[str]):
    """Load hook: a checkpoint's plain ``<prefix><name>`` goes to ``parametrizations.<name>.original``."""

    def hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for p in pnames:
            plain = prefix + p
            if plain in state_dict:
                value = state_dict.pop(plain)
                state_dict.setdefault(f"{prefix}parametrizations.{p}.original", value)

    return hook


def apply_interpolation(
    model: nn.Module,
    cfg: Union[Any, ExpertMix],
    experts: Optional[Sequence[Mapping[str, Tensor]]] = None,
    structure_only: bool = False,
) -> nn.Module:
    """Turn every piece tensor of a PETL-injected ``model`` into a mix of K experts (in place).

    ``cfg``: the model config with ``interpolation_*`` fields, or an :class:`ExpertMix`. The expert
    tensors are read from the piece files unless given in ``experts`` (then ``cfg.experts`` only
    names them). Every expert must provide exactly the model's trainable set with the same shapes.
    Afterwards the trainable parameters are the logits (``expert_mix.logits``) and, with
    ``train_experts``, the stacked experts; everything else is frozen.

    ``structure_only``: build the K slots from the model's own pieces without reading any file
    (uniform logits) — for rebuilding an interpolation checkpoint whose state dict then supplies the
    experts and logits, e.g. at evaluation on a machine without the expert files.
    """
    if getattr(model, MIX_ATTR, None) is not None:
        raise RuntimeError("apply_interpolation: the model is already interpolated; build a fresh model")
    if isinstance(cfg, ExpertMix):
        mix = replace(cfg)
        init, temperature, sims_spec, logits_spec, top_k = "given", 1.0, None, None, 0
    else:
        mix = mix_from_config(cfg)
        c = {f: getattr(cfg, f, getattr(InterpolationConfig, f, None)) for f in InterpolationConfig.__dataclass_fields__}
        init, temperature = c["interpolation_init"], c["interpolation_temperature"]
        sims_spec, logits_spec, top_k = c["interpolation_similarities"], c["interpolation_logits"], c["interpolation_top_k"]
    mix.validate()

    if structure_only:
        k = top_k or len(mix.experts)
        select_top_k(mix.experts, [0.0] * len(mix.experts), k)  # k ≤ n check
        own = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        mix.experts, experts = mix.experts[:k], [own] * k
        names, init, sims_spec, top_k = [f"expert{i}" for i in range(k)], "uniform", None, 0
    elif experts is None:
        experts, metas = load_experts(mix.experts)
        names = expert_names(mix.experts, metas)
    else:
        experts = list(experts)
        if len(experts) != len(mix.experts):
            raise ValueError(f"{len(experts)} expert tensor sets for {len(mix.experts)} expert names")
        names = list(mix.names) or [Path(p).stem for p in mix.experts]

    sims = read_similarities(sims_spec, names) if sims_spec else None
    if top_k:
        if sims is None:
            raise ValueError("--interpolation-top-k needs --interpolation-similarities to rank the experts")
        keep = select_top_k(mix.experts, sims, top_k)
        mix.experts = [mix.experts[i] for i in keep]
        experts = [experts[i] for i in keep]
        names = [names[i] for i in keep]
        sims = [sims[i] for i in keep]
    mix.names = list(names)
    K = len(mix.experts)

    if init == "uniform" or (init == "given" and not mix.logits):
        mix.logits = [0.0] * K
    elif init == "similarity":
        if sims is None:
            raise ValueError("--interpolation-init=similarity needs --interpolation-similarities")
        mix.logits = similarity_logits(sims, temperature)
    elif init == "logits":
        if not logits_spec:
            raise ValueError("--interpolation-init=logits needs --interpolation-logits")
        mix.logits = _floats(logits_spec, "interpolation_logits")
    elif init != "given":
        raise ValueError(f"--interpolation-init={init!r}: expected one of {INITS}")
    mix.validate()

    _check_against_model(model, mix.experts, experts)
    _install(model, mix, experts)
    logger.info("expert interpolation: %d experts %s, %s granularity (%d groups), initial weights %s",
                K, names, mix.granularity, len(getattr(model, MIX_ATTR).groups), _fmt(current_weights(model)))
    return model


def _fmt(w: Tensor) -> str:
    return str([round(x, 4) for x in (w if w.dim() == 1 else w[0]).tolist()])


def _check_against_model(model: nn.Module, paths: Sequence[str], experts: Sequence[Mapping[str, Tensor]]) -> None:
    """Every expert must hold exactly the model's trainable set, shape for shape."""
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if not expected:
        raise ValueError("apply_interpolation: the model has no trainable pieces; call apply_petl first")
    for path, t in zip(paths, experts):
        missing, unexpected = sorted(expected - set(t)), sorted(set(t) - expected)
        if missing or unexpected:
            raise ValueError(f"expert {path} does not match the model's PETL pieces: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]} (was it trained with the same PETL options?)")
        bad = [f"{n}: file {list(v.shape)} vs model {list(params[n].shape)}" for n, v in t.items() if v.shape != params[n].shape]
        if bad:
            raise ValueError(f"expert {path}: shape mismatch with the model: {bad[:3]}")


def _install(model: nn.Module, mix: ExpertMix, experts: Sequence[Mapping[str, Tensor]]) -> None:
    piece_names = sorted(experts[0])
    params = dict(model.named_parameters())
    groups = list(dict.fromkeys(_group_of(n, mix.granularity) for n in piece_names))
    rows = [mix.logits.get(g) for g in groups] if isinstance(mix.logits, dict) else [mix.logits] * len(groups)
    missing = [g for g, r in zip(groups, rows) if r is None]
    if missing:
        raise ValueError(f"ExpertMix.logits has no row for groups {missing[:3]}")
    weights = MixWeights(torch.tensor(rows, dtype=torch.float32, device=params[piece_names[0]].device), groups, mix)
    model.add_module(MIX_ATTR, weights)
    gidx = {g: i for i, g in enumerate(groups)}
    aliases: Dict[int, List[str]] = {}  # tied tensors (e.g. embedding = output projection) share one mix
    for module_name, module in model.named_modules():  # shared modules once
        for pname, p in module._parameters.items():
            if p is not None:
                aliases.setdefault(id(p), []).append(f"{module_name}.{pname}" if module_name else pname)
    by_module: Dict[str, List[str]] = {}
    for n in piece_names:
        p = params[n]
        g = gidx[_group_of(n, mix.granularity)]
        stacked = torch.stack([e[n].to(device=p.device, dtype=p.dtype) for e in experts])  # [K, *shape]
        mixer = ExpertInterpolation(stacked, weights, g, mix.train_experts)
        for alias in aliases[id(p)]:
            module_name, _, pname = alias.rpartition(".")
            module = model.get_submodule(module_name)
            parametrize.register_parametrization(module, pname, mixer)
            module.parametrizations[pname].original.requires_grad_(False)
            by_module.setdefault(module_name, []).append(pname)
            if alias == aliases[id(p)][0]:
                weights.targets.append((module_name, pname, g))
            else:
                weights.tied.append((module_name, pname, n))
    for module_name, pnames in by_module.items():
        weights.hooks.append(
            model.get_submodule(module_name)._register_load_state_dict_pre_hook(_route_plain_keys(pnames), with_module=True)
        )
    optional = getattr(model, "optional_state_keys", None)
    if isinstance(optional, set):  # backbone checkpoints lack these keys
        optional.update(n for n, _ in model.named_parameters() if n.startswith(MIX_ATTR) or ".parametrizations." in n)


# ------------------------------------------------------------------------------------------ queries


def _mix_of(model: nn.Module) -> MixWeights:
    mix = getattr(model, MIX_ATTR, None)
    if not isinstance(mix, MixWeights):
        raise RuntimeError("the model has no expert interpolation; call apply_interpolation first")
    return mix


def current_weights(model: nn.Module) -> Tensor:
    """Interpolation weights (softmax of the logits), detached: ``[K]`` or ``[groups, K]``."""
    w = _mix_of(model).weights().detach()
    return w[0] if w.shape[0] == 1 else w


def current_mix(model: nn.Module) -> ExpertMix:
    """The model's composition as data, with the learned logits (e.g. to save beside a checkpoint)."""
    mix = _mix_of(model)
    rows = mix.logits.detach().float().cpu().tolist()
    logits: Union[List[float], Dict[str, List[float]]] = rows[0] if mix.groups == ["*"] else dict(zip(mix.groups, rows))
    return ExpertMix(**{**asdict(mix.spec), "logits": logits})


def collapse(model: nn.Module) -> Dict[str, Tensor]:
    """The mixed pieces as an ordinary piece state dict (name → tensor), so inference costs one expert."""
    mix = _mix_of(model)
    out = {}
    with torch.no_grad():
        for module_name, pname, _ in mix.targets:
            out[f"{module_name}.{pname}" if module_name else pname] = getattr(model.get_submodule(module_name), pname).detach().clone()
    return out


def unload_interpolation(model: nn.Module) -> nn.Module:
    """Replace the mixes by plain trainable pieces holding the mixed values (in place).

    The model is then an ordinary PETL model: ``save_pieces`` writes a normal piece file.
    """
    mix = _mix_of(model)
    for module_name, pname, _ in mix.targets:
        module = model.get_submodule(module_name)
        parametrize.remove_parametrizations(module, pname, leave_parametrized=True)
        getattr(module, pname).requires_grad_(True)
    for module_name, pname, primary in mix.tied:  # re-tie to the primary's new Parameter
        module = model.get_submodule(module_name)
        parametrize.remove_parametrizations(module, pname, leave_parametrized=False)
        delattr(module, pname)
        setattr(module, pname, model.get_parameter(primary))
    for h in mix.hooks:
        h.remove()
    del model._modules[MIX_ATTR]
    optional = getattr(model, "optional_state_keys", None)
    if isinstance(optional, set):
        optional.difference_update({k for k in optional if k.startswith(MIX_ATTR) or ".parametrizations." in k})
    return model


__all__ = [
    "ExpertInterpolation", "ExpertMix", "GRANULARITIES", "INITS", "InterpolationConfig", "MixWeights",
    "apply_interpolation", "collapse", "current_mix", "current_weights", "expert_names", "load_experts",
    "mix_from_config", "read_similarities", "select_top_k", "similarity_logits", "unload_interpolation",
]
