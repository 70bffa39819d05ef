"""Expert interpolation (π-Tuning step 3): every PETL piece becomes a learned mix of K experts.

With w = softmax(logits) (one logits row per group, below) and θ_1 … θ_K the same piece in K
expert files, ``--interpolation-mixing`` chooses how the experts combine:

* ``pi_tuning`` (default): as π-Tuning's released code (``specs/pi_tuning.md`` §6). LoRA mixes the
  experts' *updates*, ``Σ_k w_k B_k A_k x`` (K·r columns, each expert with its own input dropout);
  prefixes mix each expert's keys/values *after its own dropout*, ``Σ_k w_k drop_k(kv_k)``, with one
  logits row per layer; adapters, BitFit biases and the other pieces mix parameters, ``Σ_k w_k θ_k``,
  which for an adapter is exactly π-Tuning's mix of the K adapters' linear outputs.
* ``parameters``: every piece tensor is ``Σ_k w_k θ_k`` (LoRA: ``(Σ w B)(Σ w A)``, one prefix table
  per stack). Cheaper (rank r, one table); what ofa_ext did before this option existed.

Mechanism: ``torch.nn.utils.parametrize`` on each piece parameter; the parametrization holds the
K stacked experts ``[K, *shape]`` (trainable or frozen) and reads the logits from one
:class:`MixWeights` module registered on the model as ``expert_mix``. It returns the mix
(:class:`ExpertInterpolation`), the K LoRA factors side by side (:class:`LoRAExpertBlocks`:
``lora_A`` = [A_1; …; A_K], ``lora_B`` = [w_1 B_1 … w_K B_K], so ``LoRALinear`` computes
``Σ_k w_k B_k A_k x`` unchanged) or the stack itself (:class:`ExpertStack`, prefixes, mixed per layer
by the ``PromptEncoder``). The original tensor stays as a frozen, unused
``parametrizations.<name>.original``, so a plain (non-interpolated) checkpoint still loads.

Granularity (how many logits rows):

* ``model`` (default): one K-vector for the whole model;
* ``layer``: one per ``{encoder,decoder}.layers.N``;
* ``slot``: one per module directly below a layer (``…layers.N.post_attn`` for an adapter slot,
  ``…layers.N.self_attn`` for the LoRA factors of one attention module) — π-Tuning's own
  granularity for adapters and LoRA;
* ``tensor``: one per tensor (per LoRA module with ``pi_tuning``).

With ``pi_tuning`` a prefix's layer l counts as a piece of the attention module it feeds
(``…layers.l.self_attn``), so ``layer``/``slot`` give π-Tuning's one row per layer. Other tensors
outside the layers (``parameters`` prefix tables, final LayerNorm biases) form a group per owning
module under ``layer``/``slot``.

Dropouts and the other options that shape an expert's forward pass (``FORWARD_FIELDS``) are read
from each expert's piece file: one per expert where the mix keeps the experts apart (LoRA and
prefixes with ``pi_tuning``), otherwise the experts must agree.

Initial logits: ``uniform`` (all 0, w = 1/K; π-Tuning's all-ones is the same softmax), ``logits``
(raw values, π-Tuning's ``--init-scale``) or ``similarity``: ``logits_k = log(s_k) / T`` so that
``w_k ∝ s_k^(1/T)`` (T = 1: weights = normalised similarities; T → 0: the most similar expert only).
The temperature is used only to initialise.

Composition is data: :class:`ExpertMix` (piece files, logits, strategy, mixing, granularity,
training flags, the experts' forward options) round-trips through JSON; :func:`current_mix`
snapshots a trained model. :func:`collapse` / :func:`unload_interpolation`
(``interpolation_collapse.py``) turn a mix into one ordinary piece set with the same outputs.
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
MIXINGS = ("pi_tuning", "parameters")
INITS = ("uniform", "similarity", "logits")
GRANULARITIES = ("model", "layer", "slot", "tensor")
_GROUP_PATTERNS = {
    "layer": re.compile(r"(?:encoder|decoder)\.layers\.\d+"),
    "slot": re.compile(r"(?:encoder|decoder)\.layers\.\d+\.[^.]+"),
}
MIX_ATTR = "expert_mix"
MIXING_KEY = f"{MIX_ATTR}.mixing"  # state-dict buffer: index into MIXINGS


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
    interpolation_mixing: str = field(
        default="pi_tuning",
        metadata={"help": "pi_tuning: as π-Tuning's code (LoRA Σ_k w_k B_k A_k; prefixes mixed per layer after each "
                          "expert's dropout; adapters/biases by parameters, the same thing); parameters: every piece "
                          "tensor Σ_k w_k θ_k (LoRA (Σ wB)(Σ wA), one prefix table; cheaper; ofa_ext before this option)"},
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
    (what :func:`current_mix` returns for granularities other than ``model``). JSON without
    ``mixing`` reads as ``pi_tuning``; mixes recorded before that field existed were ``parameters``.
    """

    experts: List[str]
    logits: Union[List[float], Dict[str, List[float]]] = field(default_factory=list)
    strategy: str = "interpolate"
    granularity: str = "model"
    train_experts: bool = True
    train_weights: bool = True
    names: List[str] = field(default_factory=list)  # task names of the experts (informational)
    mixing: str = "pi_tuning"
    # each expert's FORWARD_FIELDS (dropouts) as read from its file; empty: the model's own options
    expert_options: List[Dict[str, Any]] = field(default_factory=list)

    def validate(self) -> None:
        if not self.experts:
            raise ValueError("expert interpolation needs at least one expert piece file (got none)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"ExpertMix.strategy={self.strategy!r}: expected one of {STRATEGIES}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"--interpolation-granularity={self.granularity!r}: expected one of {GRANULARITIES}")
        if self.mixing not in MIXINGS:
            raise ValueError(f"--interpolation-mixing={self.mixing!r}: expected one of {MIXINGS}")
        if self.expert_options and len(self.expert_options) != len(self.experts):
            raise ValueError(f"ExpertMix.expert_options has {len(self.expert_options)} entries for "
                             f"{len(self.experts)} experts")
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
        # saved with the logits, so that a checkpoint is never read with the other mixing
        self.register_buffer("mixing", torch.tensor(MIXINGS.index(mix.mixing)))
        self.groups = list(groups)
        self.spec = ExpertMix(**{**asdict(mix), "logits": []})  # how it was built (logits live above)
        self.targets: List[Tuple[str, str, int, str]] = []  # (module name, parameter name, group, kind)
        self.tied: List[Tuple[str, str, str]] = []  # (module name, parameter name, primary full name)
        self.prompt_encoders: Dict[str, List[int]] = {}  # pi_tuning: encoder name -> group of each layer
        self.hooks: List[Any] = []  # load-state-dict hooks to remove on unload

    def weights(self) -> Tensor:
        return self.logits.softmax(-1)

    def extra_repr(self) -> str:
        return (f"mixing={self.spec.mixing}, groups={len(self.groups)}, experts={len(self.spec.experts)}, "
                f"tensors={len(self.targets)}")


class _Experts(nn.Module):
    """A parametrization holding K stacked experts of one tensor; ``_mix`` is a reference to the
    model's :class:`MixWeights`, not a submodule (the model owns it)."""

    def __init__(self, experts: Tensor, mix: MixWeights, group: int, trainable: bool = True):
        super().__init__()
        self.experts = nn.Parameter(experts, requires_grad=trainable)  # [K, *shape]
        object.__setattr__(self, "_mix", mix)
        self.group = group

    def _w(self) -> Tensor:
        return self._mix.logits[self.group].softmax(-1).to(self.experts.dtype)  # [K]


class ExpertInterpolation(_Experts):
    """``Σ_k softmax(logits[group])_k · experts[k]`` (the original is ignored)."""

    def forward(self, original: Tensor) -> Tensor:
        return torch.tensordot(self._w(), self.experts, dims=1)  # [*shape]


class LoRAExpertBlocks(_Experts):
    """K LoRA experts side by side: ``lora_A`` -> [A_1; …; A_K] [K·r, in] (weights not needed),
    ``lora_B`` -> [w_1 B_1 … w_K B_K] [out, K·r], so that ``B A x = Σ_k w_k B_k A_k x``."""

    def __init__(self, experts: Tensor, mix: MixWeights, group: int, trainable: bool, role: str):
        super().__init__(experts, mix, group, trainable)
        self.role = role

    def forward(self, original: Tensor) -> Tensor:
        if self.role == "A":
            return self.experts.flatten(0, 1)  # [K, r, in] -> [K·r, in]
        scaled = self.experts * self._w()[:, None, None]  # [K, out, r]
        return scaled.permute(1, 0, 2).flatten(1)  # [out, K·r]

    def extra_repr(self) -> str:
        return f"role={self.role}"


class ExpertStack(_Experts):
    """The K experts themselves ``[K, *shape]``: the module mixes them (prefixes, per layer)."""

    def forward(self, original: Tensor) -> Tensor:
        return self.experts


class LayerRows:
    """``rows(l)``: the K weights of the logits row of a prompt encoder's layer l."""

    def __init__(self, mix: MixWeights, rows: Sequence[int]):
        self.mix, self.rows = mix, list(rows)

    def __call__(self, layer: int) -> Tensor:
        return self.mix.logits[self.rows[layer]].softmax(-1)


# ------------------------------------------------------------------------------------------ loading


def _piece_io():
    from .petl import read_piece_file
    from .petl.config import STRUCTURAL_FIELDS

    return read_piece_file, STRUCTURAL_FIELDS


def _model_petl_config(model: nn.Module):
    from .petl.config import PETLConfig, as_petl_config

    return as_petl_config(getattr(model, "petl_config", None) or PETLConfig())


def expert_options(metas: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Each expert's options that shape its forward pass (dropouts), as its file records them."""
    from .petl.config import FORWARD_FIELDS

    return [{f: getattr(m["petl_config"], f) for f in FORWARD_FIELDS} for m in metas]


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
    return ExpertMix(experts=experts, granularity=c.interpolation_granularity, mixing=c.interpolation_mixing,
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
    names them, and the experts' dropouts are ``cfg.expert_options`` or the model's). Every expert
    must provide exactly the model's trainable set with the same shapes. Afterwards the trainable
    parameters are the logits (``expert_mix.logits``) and, with ``train_experts``, the stacked
    experts; everything else is frozen.

    ``structure_only``: build the K slots from the model's own pieces without reading any file
    (uniform logits, the model's dropouts) — for rebuilding an interpolation checkpoint whose state
    dict then supplies the experts and logits, e.g. at evaluation on a machine without the files.
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
    own_options = expert_options([{"petl_config": _model_petl_config(model)}])[0]

    if structure_only:
        k = top_k or len(mix.experts)
        select_top_k(mix.experts, [0.0] * len(mix.experts), k)  # k ≤ n check
        own = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        mix.experts, experts = mix.experts[:k], [own] * k
        names, init, sims_spec, top_k = [f"expert{i}" for i in range(k)], "uniform", None, 0
        options = [own_options] * k
    elif experts is None:
        experts, metas = load_experts(mix.experts)
        names = expert_names(mix.experts, metas)
        options = expert_options(metas)
    else:
        experts = list(experts)
        if len(experts) != len(mix.experts):
            raise ValueError(f"{len(experts)} expert tensor sets for {len(mix.experts)} expert names")
        names = list(mix.names) or [Path(p).stem for p in mix.experts]
        options = [{**own_options, **o} for o in mix.expert_options] or [own_options] * len(experts)

    sims = read_similarities(sims_spec, names) if sims_spec else None
    if top_k:
        if sims is None:
            raise ValueError("--interpolation-top-k needs --interpolation-similarities to rank the experts")
        keep = select_top_k(mix.experts, sims, top_k)
        mix.experts = [mix.experts[i] for i in keep]
        experts = [experts[i] for i in keep]
        names = [names[i] for i in keep]
        sims = [sims[i] for i in keep]
        options = [options[i] for i in keep]
    mix.names, mix.expert_options = list(names), list(options)
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
    _use_expert_options(model, mix)
    logger.info("expert interpolation: %d experts %s, %s mixing, %s granularity (%d groups), initial weights %s",
                K, names, mix.mixing, mix.granularity, len(getattr(model, MIX_ATTR).groups), _fmt(current_weights(model)))
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


def _prompt_encoder_layers(model: nn.Module) -> Dict[str, List[str]]:
    """name of every prompt encoder -> the attention module each of its layers feeds."""
    from .petl.prefix import PrefixProvider, PromptEncoder

    encoders = {id(m): (n, m) for n, m in model.named_modules() if isinstance(m, PromptEncoder)}
    out = {n: [f"{n}.layers.{l}" for l in range(m.num_layers)] for n, m in encoders.values()}
    for name, module in model.named_modules():
        prov = getattr(module, "prefix_provider", None)
        if isinstance(prov, PrefixProvider) and id(prov.encoder) in encoders:
            out[encoders[id(prov.encoder)][0]][prov.layer] = name
    return out


def _kind_of(model: nn.Module, name: str, mix: ExpertMix, prompt_encoders: Mapping[str, Any]) -> Tuple[str, str]:
    """(kind, group name) of piece tensor ``name``: kind ``mix`` (Σ w θ), ``lora`` or ``stack`` (prefix)."""
    from .petl.lora import LoRALinear

    if mix.mixing == "pi_tuning":
        module_name, _, pname = name.rpartition(".")
        if pname in ("lora_A", "lora_B") and isinstance(model.get_submodule(module_name), LoRALinear):
            return "lora", _group_of(f"{module_name}.lora", mix.granularity)
        if any(name.startswith(e + ".") for e in prompt_encoders):
            return "stack", ""
    return "mix", _group_of(name, mix.granularity)


def _install(model: nn.Module, mix: ExpertMix, experts: Sequence[Mapping[str, Tensor]]) -> None:
    piece_names = sorted(experts[0])
    params = dict(model.named_parameters())
    prompt_layers = _prompt_encoder_layers(model) if mix.mixing == "pi_tuning" else {}
    kinds = {n: _kind_of(model, n, mix, prompt_layers) for n in piece_names}
    prompt_layers = {e: layers for e, layers in prompt_layers.items() if any(k[0] == "stack" and n.startswith(e + ".")
                                                                         for n, k in kinds.items())}
    layer_groups = {e: [_group_of(f"{a}.prefix", mix.granularity) for a in attns] for e, attns in prompt_layers.items()}
    groups = list(dict.fromkeys([g for k, g in kinds.values() if k != "stack"]
                                + [g for gs in layer_groups.values() for g in gs]))
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
        kind, group = kinds[n]
        g = gidx.get(group, -1)
        stacked = torch.stack([e[n].to(device=p.device, dtype=p.dtype) for e in experts])  # [K, *shape]
        if kind == "lora":
            mixer = LoRAExpertBlocks(stacked, weights, g, mix.train_experts, role=n.rpartition("_")[2])
        elif kind == "stack":
            mixer = ExpertStack(stacked, weights, g, mix.train_experts)
        else:
            mixer = ExpertInterpolation(stacked, weights, g, mix.train_experts)
        for alias in aliases[id(p)]:
            module_name, _, pname = alias.rpartition(".")
            module = model.get_submodule(module_name)
            parametrize.register_parametrization(module, pname, mixer, unsafe=kind != "mix")
            module.parametrizations[pname].original.requires_grad_(False)
            by_module.setdefault(module_name, []).append(pname)
            if alias == aliases[id(p)][0]:
                weights.targets.append((module_name, pname, g, kind))
            else:
                weights.tied.append((module_name, pname, n))
    for e, gs in layer_groups.items():
        weights.prompt_encoders[e] = [gidx[g] for g in gs]
        model.get_submodule(e).mix_experts(LayerRows(weights, weights.prompt_encoders[e]),
                                           [o["prompt_dropout"] for o in mix.expert_options])
    for module_name, pnames in by_module.items():
        weights.hooks.append(
            model.get_submodule(module_name)._register_load_state_dict_pre_hook(_route_plain_keys(pnames), with_module=True)
        )
    optional = getattr(model, "optional_state_keys", None)
    if isinstance(optional, set):  # backbone checkpoints lack these keys
        optional.update(n for n, _ in list(model.named_parameters()) + list(model.named_buffers())
                        if n.startswith(MIX_ATTR) or ".parametrizations." in n)


def _agree(mix: ExpertMix, field_name: str, what: str) -> Any:
    values = [o[field_name] for o in mix.expert_options]
    if any(v != values[0] for v in values):
        raise ValueError(f"the experts {mix.experts} were trained with different --{field_name.replace('_', '-')} "
                         f"{values}, but {mix.mixing} mixing has one {what} per site: they must agree")
    return values[0]


def _use_expert_options(model: nn.Module, mix: ExpertMix) -> None:
    """Give the mixed pieces the dropouts the experts were trained with (read from their files)."""
    from .petl.adapter import Adapter
    from .petl.config import active_methods
    from .petl.inject import _drop_path_rate
    from .petl.lora import LoRALinear
    from .petl.prefix import PromptEncoder

    own = _model_petl_config(model)
    methods = active_methods(own)
    used = {"adapter_dropout": "adapter", "prompt_dropout": "prefix", "lora_dropout": "lora"}
    for f, method in used.items():
        values = [o[f] for o in mix.expert_options]
        if method in methods and any(v != getattr(own, f) for v in values):
            logger.warning("--%s: the experts were trained with %s, which the interpolation uses (this run's "
                           "option says %r)", f.replace("_", "-"), values, getattr(own, f))
    per_expert = mix.mixing == "pi_tuning"
    if "lora" in methods:
        rate = None if per_expert else _agree(mix, "lora_dropout", "LoRA dropout")
        for m in model.modules():
            if isinstance(m, LoRALinear):
                if per_expert:
                    m.use_expert_dropouts([o["lora_dropout"] for o in mix.expert_options])
                else:
                    m.lora_dropout = nn.Dropout(rate) if rate > 0 else nn.Identity()
    if "prefix" in methods and not per_expert:  # pi_tuning: each expert's own, set by _install
        rate = _agree(mix, "prompt_dropout", "prefix dropout")
        for m in model.modules():
            if isinstance(m, PromptEncoder):
                m.dropout.p = rate
    if "adapter" in methods:
        rate = _agree(mix, "adapter_dropout", "adapter (π-Tuning mixes the adapters' linear outputs)")
        for name, m in model.named_modules():
            if isinstance(m, Adapter):
                m.dropout.p = rate if rate is not None else _drop_path_rate(model.get_submodule(name.rpartition(".")[0]))


def _uninstall(model: nn.Module) -> ExpertMix:
    """Undo :func:`apply_interpolation` without mixing: the pieces get back their own values."""
    from .petl.lora import LoRALinear
    from .petl.prefix import PromptEncoder

    mix = _mix_of(model)
    for module_name, pname, _, _ in mix.targets:
        module = model.get_submodule(module_name)
        parametrize.remove_parametrizations(module, pname, leave_parametrized=False)
        getattr(module, pname).requires_grad_(True)
    for module_name, pname, _ in mix.tied:  # the aliases share the same original Parameter
        parametrize.remove_parametrizations(model.get_submodule(module_name), pname, leave_parametrized=False)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.use_expert_dropouts(None)
        elif isinstance(m, PromptEncoder):
            m.mix_experts(None)
    for h in mix.hooks:
        h.remove()
    del model._modules[MIX_ATTR]
    optional = getattr(model, "optional_state_keys", None)
    if isinstance(optional, set):
        optional.difference_update({k for k in optional if k.startswith(MIX_ATTR) or ".parametrizations." in k})
    return mix.spec


def set_mixing(model: nn.Module, mixing: str) -> nn.Module:
    """Rebuild the model's mix with another ``mixing`` (same experts and granularity; the slots hold
    the model's own pieces and uniform weights until a state dict fills them)."""
    spec = _uninstall(model)
    own = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    options = spec.expert_options
    if mixing == "parameters" and any(o != options[0] for o in options):
        options = []  # one module per site: the model's own dropouts
    spec = replace(spec, mixing=mixing, logits=[], expert_options=options)
    return apply_interpolation(model, spec, experts=[own] * len(spec.experts))


def adopt_checkpoint_mixing(model: nn.Module, state_dict: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """Read a checkpoint with the mixing it was trained with (``expert_mix.mixing``).

    Checkpoints written before ``--interpolation-mixing`` existed have no such key and mix
    parameters. When the model was built with the other mixing, its mix is rebuilt (a warning
    says so) and the state dict then fills it; a state dict without a mix (a backbone) passes."""
    mix = _mix_of(model)
    if f"{MIX_ATTR}.logits" not in state_dict:
        return state_dict
    legacy = MIXING_KEY not in state_dict
    theirs = "parameters" if legacy else MIXINGS[int(state_dict[MIXING_KEY])]
    if theirs != mix.spec.mixing:
        logger.warning("the checkpoint's experts are mixed with --interpolation-mixing %s%s, the model was built with "
                       "%s: rebuilding the mix as the checkpoint's", theirs,
                       " (written before that option existed)" if legacy else "", mix.spec.mixing)
        set_mixing(model, theirs)
    if legacy:
        state_dict = {**state_dict, MIXING_KEY: _mix_of(model).mixing.detach().clone()}
    return state_dict


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


from .interpolation_collapse import collapse, collapsed_petl_config, lora_delta_weights, unload_interpolation  # noqa: E402

__all__ = [
    "ExpertInterpolation", "ExpertMix", "ExpertStack", "GRANULARITIES", "INITS", "InterpolationConfig", "LoRAExpertBlocks",
    "MIXINGS", "MixWeights", "adopt_checkpoint_mixing", "apply_interpolation", "collapse", "collapsed_petl_config",
    "current_mix", "current_weights", "expert_names", "expert_options", "load_experts", "lora_delta_weights",
    "mix_from_config", "read_similarities", "select_top_k", "set_mixing", "similarity_logits",
    "unload_interpolation",
]
