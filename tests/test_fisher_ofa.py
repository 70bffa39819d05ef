"""Fisher estimators on the real ofa_nano backbone (ResNet with BatchNorm, encoder-decoder, adapters)."""

import torch

import ofa_ext.models.registered  # noqa: E402,F401  (registers model ofa; a broken import fails)

from ofa_ext.metrics.fisher import fisher_diagonal  # noqa: E402

from test_interpolation_ofa import ll, nano, sample  # noqa: E402


def test_fisher_on_ofa_nano_pi_tuning_train_mode_and_per_sample():
    model = nano(dict(adapter=True, adapter_dim=4, adapter_init="normal"))
    est = fisher_diagonal(model, [sample(), sample(2)], lambda m, s: -ll(m, s).sum(), mode="train", batch_size=3)
    assert est.divisor == 6 and all(torch.isfinite(v).all() for v in est.fisher.values())
    loop = fisher_diagonal(model, [sample()], ll, estimator="empirical", vectorized=False)
    vec = fisher_diagonal(model, [sample()], ll, estimator="empirical", vectorized=True)
    for k in loop.fisher:
        torch.testing.assert_close(vec.fisher[k], loop.fisher[k], rtol=1e-5, atol=1e-10)
