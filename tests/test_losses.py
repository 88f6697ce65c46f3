"""The one multi-term loss every model's config uses."""

import pytest
import torch
import torch.nn.functional as F

from tempo.run.losses import CrossEntropy, MultiTermLoss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = {k: torch.randn(4, 5, generator=g) for k in ("main", "aux", "o", "d", "c")}
    return logits, torch.tensor([0, 1, 2, 3])


def test_cross_entropy_is_plain_ce(batch):
    logits, y = batch
    terms = CrossEntropy()({"logits": logits["main"]}, y)
    assert set(terms) == {"loss", "ce"}
    torch.testing.assert_close(terms["loss"], F.cross_entropy(logits["main"], y))


def test_aux_weight_and_zero_weight(batch):
    logits, y = batch
    out = {"logits": logits["main"], "aux_logits": logits["aux"]}
    ce_main, ce_aux = F.cross_entropy(logits["main"], y), F.cross_entropy(logits["aux"], y)
    terms = MultiTermLoss({"logits": 1.0, "aux_logits": 0.5})(out, y)
    torch.testing.assert_close(terms["loss"], ce_main + 0.5 * ce_aux)
    torch.testing.assert_close(terms["aux"], ce_aux)  # logged unweighted
    zero = MultiTermLoss({"logits": 1.0, "aux_logits": 0.0})(out, y)
    torch.testing.assert_close(zero["loss"], ce_main)
    # eval outputs carry no aux head: the term is skipped, not an error
    assert set(MultiTermLoss({"logits": 1.0, "aux_logits": 0.5})({"logits": logits["main"]}, y)) == {"loss", "ce"}


def test_branch_terms_and_regularizers(batch):
    logits, y = batch
    out = {"logits": logits["main"],
           "branch_logits": {"original": logits["o"], "discriminative": logits["d"], "complementary": logits["c"]},
           "regularizers": {"div_s": torch.tensor(0.7), "div_t": torch.tensor(0.2)}}
    loss = MultiTermLoss({"logits": 1.0}, branch_weight=1.0, regularizer_weights={"div_s": 0.01, "div_t": 0.001})
    terms = loss(out, y)
    expected = sum(F.cross_entropy(logits[k], y) for k in ("main", "o", "d", "c")) + 0.007 + 0.0002
    torch.testing.assert_close(terms["loss"], expected)
    assert {"ce", "ce_original", "ce_discriminative", "ce_complementary", "div_s", "div_t"} <= set(terms)


def test_missing_everything_is_an_error(batch):
    with pytest.raises(KeyError, match="aux_logits"):
        MultiTermLoss({"aux_logits": 1.0})({"logits": batch[0]["main"]}, batch[1])
