"""Task ``prompt_transfer``: a source prompt reused on a target task (``specs/prompt_transfer.md`` §3).

    fairseq-train data/arrays/digits --user-dir ofa_ext --task prompt_transfer --arch crossmodal_model \\
        --body minilm --pt-source-prompt prompts/polarity.safetensors --pt-mode attention \\
        --pt-attn-src-len 10 --pt-total-len 20 --valid-subset valid,test ...
    ofa-epoch-report checkpoints/pt_digits/train.log      # best-epoch test and validation-selected test

``--pt-mode frozen`` feeds the source prompt as it is (widths must match), ``projection`` through a
trained ``Linear(d_src, d)``, ``attention`` as ``K = --pt-attn-src-len`` tokens attended from the
source plus ``--pt-total-len − K`` fresh target tokens (VPT's Xavier init). The body is frozen;
what trains is the projector / attention and target part, the head and, for a foreign input, the
embedder. The source prompt file is any file ``ofa-transferability`` reads (a piece file of a
``prompt_tuning`` run, or a plain ``prompt`` tensor); its tensor is stored in the checkpoint too.
The paper reports the best test accuracy over epochs (``--valid-subset valid,test`` and
``ofa-epoch-report``); the report gives the validation-selected test accuracy beside it.
"""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task

from ..models.crossmodal.prompt_transfer import MODES, TransferredPrompt, TransferredPromptHook
from ..models.petl import active_methods
from ..models.petl.freeze import freeze_all_but
from ..utils.prompts import load_prompt
from .crossmodal_finetune import CrossmodalFinetuneConfig, CrossmodalFinetuneTask


@dataclass
class PromptTransferConfig(CrossmodalFinetuneConfig):
    pt_mode: str = field(default="projection", metadata={"help": "frozen | projection | attention"})
    pt_source_prompt: str = field(default="", metadata={
        "help": "source prompt file (.safetensors: a prompt_tuning piece file or a 'prompt' tensor)"})
    pt_attn_src_len: Optional[int] = field(default=None, metadata={
        "help": "attention mode: K tokens attended from the source (default: --pt-total-len)"})
    pt_total_len: Optional[int] = field(default=None, metadata={
        "help": "attention mode: total prompt length, K attended + the rest fresh target tokens (default: the source's)"})
    pt_attn_dropout: float = field(default=0.0, metadata={"help": "dropout on the attention weights (released: 0)"})
    pt_scaled_attention: bool = field(default=False, metadata={
        "help": "scale attention scores by 1/sqrt(d) (the released projector does not)"})


@register_task("prompt_transfer", dataclass=PromptTransferConfig)
class PromptTransferTask(CrossmodalFinetuneTask):
    cfg: PromptTransferConfig

    @classmethod
    def setup_task(cls, cfg: PromptTransferConfig, **kwargs):
        if cfg.pt_mode not in MODES:
            raise ValueError(f"--pt-mode {cfg.pt_mode!r}: expected one of {', '.join(MODES)}")
        if not cfg.pt_source_prompt:
            raise ValueError("--task prompt_transfer needs --pt-source-prompt FILE")
        load_prompt(cfg.pt_source_prompt)  # a bad file stops here, before any model is built
        return super().setup_task(cfg, **kwargs)

    def build_model(self, cfg, from_checkpoint: bool = False):
        if active_methods(cfg):
            raise ValueError(f"--task prompt_transfer builds its prompt from --pt-source-prompt: drop the PETL "
                             f"options {', '.join(active_methods(cfg))}")
        model = super().build_model(cfg, from_checkpoint)
        body = model.body
        c = self.cfg
        prompt = TransferredPrompt(load_prompt(c.pt_source_prompt), body.width, c.pt_mode, c.pt_total_len,
                                   c.pt_attn_src_len, c.pt_attn_dropout, c.pt_scaled_attention)
        if prompt.total_len + getattr(model.embedder, "n_tokens", 0) > body.max_length:
            raise ValueError(f"a {prompt.total_len}-token prompt + {model.embedder.n_tokens} input tokens exceed the "
                             f"{body.max_length} tokens body {body.kind} takes")
        body.input_prompt = TransferredPromptHook(prompt)
        trainable = [n for n, _ in model.named_parameters()
                     if n.split(".")[0] in ("embedder", "head") or n.startswith("body.input_prompt.")]
        freeze_all_but(model, trainable)
        return model
