"""Options of every PETL method, as one dataclass mixed into the model config.

Flag names follow π-Tuning / OFA (`--adapter --adapter-dim`, `--encoder-prompt`,
`--encoder-prompt-length`, `--lora --lora-r`, `--bitfit`; in that style `--input-prompt-length`). The same dataclass is written next to
saved pieces so that a piece file describes itself.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from fairseq.dataclass import FairseqDataclass


@dataclass
class PETLConfig(FairseqDataclass):
    # adapters
    adapter: bool = field(default=False, metadata={"help": "insert bottleneck adapters after attention and FFN"})
    adapter_dim: int = field(default=128, metadata={"help": "adapter bottleneck size"})
    adapter_sites: str = field(
        default="attn,ffn", metadata={"help": "comma list of adapter sites: attn (after self-attention), ffn"}
    )
    adapter_init: str = field(
        default="zero",
        metadata={"help": "'zero': up-projection starts at 0 (step 0 = backbone); 'normal': N(0,0.02) as π-Tuning"},
    )
    adapter_dropout: Optional[float] = field(
        default=None,
        metadata={"help": "dropout inside adapters; unset: the drop-path rate of the adapter's layer (π-Tuning)"},
    )
    # prefixes
    encoder_prompt: bool = field(default=False, metadata={"help": "learned key/value prefixes in encoder self-attention"})
    decoder_prompt: bool = field(default=False, metadata={"help": "learned key/value prefixes in decoder self-attention"})
    encoder_prompt_length: int = field(default=100, metadata={"help": "number of encoder prefix tokens"})
    decoder_prompt_length: int = field(default=100, metadata={"help": "number of decoder prefix tokens"})
    prompt_projection: bool = field(
        default=False, metadata={"help": "reparameterise prefixes through an MLP (prefix-tuning)"}
    )
    encoder_prompt_dim: int = field(default=512, metadata={"help": "hidden size of the encoder prefix MLP"})
    decoder_prompt_dim: int = field(default=512, metadata={"help": "hidden size of the decoder prefix MLP"})
    prompt_dropout: float = field(default=0.0, metadata={"help": "dropout on prefix keys/values (π-Tuning: 0.2)"})
    # input-level prompts (every body)
    input_prompt_length: int = field(
        default=0,
        metadata={"help": "number of soft tokens prepended to the body's input embeddings (0: off); "
                          "works on every body, unlike the attention prefixes of --encoder-prompt"},
    )
    # LoRA
    lora: bool = field(default=False, metadata={"help": "low-rank adaptation of linear projections"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=1.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    lora_targets: str = field(
        default="q_proj,k_proj,v_proj,out_proj",
        metadata={"help": "comma list of projections to adapt: q_proj,k_proj,v_proj,out_proj,fc1,fc2"},
    )
    # BitFit
    bitfit: bool = field(default=False, metadata={"help": "train only bias terms"})
    bitfit_scope: str = field(
        default="pi_tuning",
        metadata={"help": "'pi_tuning': LayerNorm and FFN biases as π-Tuning; 'all': every bias"},
    )
    # shared
    train_layernorm: bool = field(default=False, metadata={"help": "also train every LayerNorm"})
    train_head: bool = field(default=False, metadata={"help": "also train the (tied) token embedding / output head"})
    petl_load: Optional[str] = field(default=None, metadata={"help": "piece file (.safetensors) to load after building"})


# Fields that decide which tensors exist and what they mean: a piece file and the model it is
# loaded into must agree on these (dropouts, init and petl_load may differ).
STRUCTURAL_FIELDS = (
    "adapter", "adapter_dim", "adapter_sites",
    "encoder_prompt", "decoder_prompt", "encoder_prompt_length", "decoder_prompt_length",
    "prompt_projection", "encoder_prompt_dim", "decoder_prompt_dim", "input_prompt_length",
    "lora", "lora_r", "lora_alpha", "lora_targets",
    "bitfit", "bitfit_scope", "train_layernorm", "train_head",
)


def petl_field_names() -> List[str]:
    return [f.name for f in fields(PETLConfig) if not f.name.startswith("_")]


def as_petl_config(cfg: Any) -> PETLConfig:
    """A plain ``PETLConfig`` from any config carrying its fields (OFAConfig, DictConfig, Namespace).

    Fields the object lacks take their defaults, so old model configs without PETL keys work.
    """
    if type(cfg) is PETLConfig:
        return cfg
    defaults = PETLConfig()
    return PETLConfig(**{n: getattr(cfg, n, getattr(defaults, n)) for n in petl_field_names()})


def active_methods(cfg: PETLConfig) -> List[str]:
    """Methods switched on, in a fixed order: adapter, prefix, lora, bitfit, input_prompt."""
    on = {
        "adapter": cfg.adapter,
        "prefix": cfg.encoder_prompt or cfg.decoder_prompt,
        "lora": cfg.lora,
        "bitfit": cfg.bitfit,
        "input_prompt": cfg.input_prompt_length > 0,
    }
    return [m for m, flag in on.items() if flag]


def petl_config_to_dict(cfg: PETLConfig) -> Dict[str, Any]:
    return {n: v for n, v in asdict(cfg).items() if not n.startswith("_")}


def petl_config_from_dict(values: Dict[str, Any]) -> Tuple[PETLConfig, List[str]]:
    """(config, unknown keys): keys this version does not know are returned, not fatal."""
    known = set(petl_field_names())
    unknown = sorted(k for k in values if k not in known)
    return PETLConfig(**{k: v for k, v in values.items() if k in known}), unknown
