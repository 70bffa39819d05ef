"""Model ``pare_model``: ``crossmodal_model`` plus PaRe's token gate and source head (`specs/pare.md` §3).

    fairseq-train DATA --user-dir ofa_ext --task pare --arch pare_model --body minilm ...

Same options as ``crossmodal_model`` (embedder, body, head, PETL pieces). Added: the gate
``sigmoid(Linear(d, 1))`` scoring target and source tokens (d = the body's input width) and a
source head ``Linear(d_out, source classes)`` on the pooled body output of the mixed tokens. Both
always train, also next to PETL pieces. The plain ``forward`` is the target path alone, which is
all that evaluation uses; ``embed`` / ``encode`` split it so the criterion can run the body a
second time on mixed tokens (the released "mid-network forward").
"""

from typing import Optional

from fairseq.models import register_model
from torch import Tensor

from .heads import PooledHead
from .model import CrossmodalModel, CrossmodalModelConfig
from .pare import TokenGate


@register_model("pare_model", dataclass=CrossmodalModelConfig)
class PareModel(CrossmodalModel):
    @classmethod
    def build_model(cls, cfg: CrossmodalModelConfig, task) -> "PareModel":
        model = super().build_model(cfg, task)  # embedder, body, head; PETL applied and frozen
        # added after PETL's freezing, so they train in every setting (as released)
        model.gate = TokenGate(model.body.width)
        model.source_head = PooledHead(model.body.out_width, task.n_source_classes, cfg.head_pooling)
        return model

    def embed(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Target inputs -> (tokens (B, N, d), padding mask or None)."""
        return self.embedder(x)

    def encode(self, tokens: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        """Tokens (B, T, d) of any origin -> body hidden states (B, T, d_out)."""
        return self.body(tokens, padding_mask)
