"""The loss on the prompt-free lesion map (``lesion_map_weight``): it trains the very map the
engine grounds organ answers in."""

from __future__ import annotations

import numpy as np
import torch
from malenia.attributes.schema import LesionDescription
from malenia.losses import lesion_map_logits
from malenia.model import MaleniaNet
from malenia.train import TrainConfig, compute_loss
from malenia.training.prompts import Vocabulary
from training_helpers import small_config

torch.set_num_threads(2)


def test_lesion_map_logits_are_the_engines_map_in_logit_form():
    """sigmoid of the logits is the engine's max over tokens of sigmoid(mask) x
    sigmoid(objectness), also where a token is all but certain or all but absent."""
    generator = torch.Generator().manual_seed(0)
    masks = torch.randn(2, 5, 4, 6, 6, generator=generator) * 8
    masks[0, 1, 0, 0, 0] = 40.0  # saturated
    objectness = torch.randn(2, 5, generator=generator) * 4
    objectness[0, 1] = 30.0
    engine_map = (torch.sigmoid(masks) * torch.sigmoid(objectness)[..., None, None, None]).amax(1)
    logits = lesion_map_logits(masks, objectness)
    assert logits.shape == (2, 4, 6, 6) and torch.isfinite(logits).all()
    torch.testing.assert_close(torch.sigmoid(logits), engine_map, atol=2e-6, rtol=1e-4)


def test_lesion_map_loss_is_off_by_default_and_reaches_the_objectness_head_when_on():
    from malenia.synth import SyntheticLesionDataset
    from malenia.synth.split import SEEN_CATEGORIES

    dataset = SyntheticLesionDataset(
        SEEN_CATEGORIES, seed=4, shape=(32, 32, 32), spacing=(3.0,) * 3
    )
    item = dataset[0]
    assert item["instance_mask"].any()
    vocabulary = Vocabulary("cpu")
    pool = {c: [LesionDescription(location="left kidney")] for c in SEEN_CATEGORIES}
    torch.manual_seed(0)
    model = MaleniaNet(small_config())
    without = TrainConfig(objectness_weight=0.0)
    loss, parts = compute_loss(model, [item], vocabulary, without, 0, pool, "cpu")
    assert "lesion_map" not in parts
    loss.backward()
    untaught = model.objectness.weight.grad
    assert untaught is None or not untaught.any()  # nothing else teaches objectness here

    model.zero_grad()
    config = TrainConfig(lesion_map_weight=1.0, objectness_weight=0.0)
    loss, parts = compute_loss(model, [item], vocabulary, config, 0, pool, "cpu")
    assert parts["lesion_map"] > 0
    loss.backward()
    assert torch.any(model.objectness.weight.grad != 0)

    empty = {**item, "instance_mask": np.zeros_like(item["instance_mask"]), "descriptions": [],
             "categories": [], "reports": []}  # fmt: skip
    _, parts = compute_loss(model, [empty], vocabulary, config, 0, pool, "cpu")
    assert parts["lesion_map"] > 0  # a lesion-free window still teaches an empty map
