"""Task ``prompt_tuning``: an input-level prompt and a head on a frozen body (``specs/prompt_transfer.md`` §2).

    fairseq-train data/arrays/polarity --user-dir ofa_ext --task prompt_tuning --arch crossmodal_model \\
        --body minilm --input-prompt-length 100 --input-prompt-init xavier --criterion crossmodal_loss ...
    ofa-pieces export checkpoints/pt_polarity/checkpoint_best.pt prompts/polarity.safetensors

The data, embedders and heads are those of ``crossmodal_finetune`` (text, series, images, table rows
in ``.npz`` files). The task only insists that what trains is a prompt: ``--input-prompt-length`` > 0
and no other PETL method, so the body stays frozen and the piece file (``ofa-pieces export``)
holds the prompt, the head and, for a foreign input, the embedder. Such files are the source
prompts of ``prompt_transfer`` and the inputs of ``ofa-transferability``.
"""

from fairseq.tasks import register_task

from ..models.petl import active_methods
from .crossmodal_finetune import CrossmodalFinetuneConfig, CrossmodalFinetuneTask


def check_prompt_only(model_cfg) -> None:
    """An input prompt and nothing else of PETL; one line naming the options otherwise."""
    length = getattr(model_cfg, "input_prompt_length", 0)
    others = [m for m in active_methods(model_cfg) if m != "input_prompt"]
    if length <= 0 or others:
        extra = f" (also switched on: {', '.join(others)})" if others else ""
        raise ValueError(f"--task prompt_tuning trains an input prompt only: give --input-prompt-length P > 0 "
                         f"and no other PETL method{extra}")


@register_task("prompt_tuning", dataclass=CrossmodalFinetuneConfig)
class PromptTuningTask(CrossmodalFinetuneTask):
    def build_model(self, cfg, from_checkpoint: bool = False):
        check_prompt_only(cfg)
        return super().build_model(cfg, from_checkpoint)
