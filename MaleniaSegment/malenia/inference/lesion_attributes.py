"""The attributes the model reads off a lesion it found on its own (``find_lesions``): the
eight elemental attributes of the mask token that covers the lesion best."""

from __future__ import annotations

import torch

from malenia.attributes.schema import ATTRIBUTE_KEYS


@torch.no_grad()
def predicted_attributes(engine, windows, bbox_model) -> dict[str, dict[str, float]]:
    """Attribute probabilities (phrase -> probability per attribute) of the token whose mask x
    objectness is highest at the centre of ``bbox_model`` over the encoded ``windows``; for
    specific features only those above 0.5. Empty when no window holds that centre."""
    model, table = engine.model, engine.table
    best, best_score = None, -1.0
    centre = tuple((s.start + s.stop) // 2 for s in bbox_model)
    for w in windows:
        if all(sl.start <= c < sl.stop for sl, c in zip(w.slices, centre, strict=True)):
            local = tuple(c - sl.start for sl, c in zip(w.slices, centre, strict=True))
            scores = torch.sigmoid(
                model.mask_head(w.tokens) @ w.f4.float()[(slice(None), *local)]
            ) * torch.sigmoid(w.objectness)
            index = int(scores.argmax())
            if float(scores[index]) > best_score:
                best, best_score = w.tokens[index], float(scores[index])
    if best is None:
        return {}
    vocab = [table.vocabulary_matrix(k)[1] for k in ATTRIBUTE_KEYS]
    logits = model.attribute_logits(best[None], vocab)
    soft = {}
    for key, key_logits in zip(ATTRIBUTE_KEYS, logits, strict=True):
        probs = torch.softmax(key_logits[0], dim=-1)
        phrases = table.vocabulary_matrix(key)[0]
        pairs = zip(phrases, probs, strict=True)
        if key == "specific_features":
            soft[key] = {p: float(v) for p, v in pairs if float(v) > 0.5}
        else:
            soft[key] = {p: float(v) for p, v in pairs}
    return soft
