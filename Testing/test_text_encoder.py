"""The frozen text encoder and the precomputed attribute-embedding table."""

from __future__ import annotations

import pytest
import torch
from malenia.attributes import ATTRIBUTE_KEYS, get_preset, load_vocabulary
from malenia.errors import WeightsError
from malenia.text import EMBED_DIM, EmbeddingTable, load_embedding_table, template


def test_table_covers_every_canonical_value():
    table = load_embedding_table()
    vocabulary = load_vocabulary()
    for key in ATTRIBUTE_KEYS:
        phrases, matrix = table.vocabulary_matrix(key)
        assert phrases == vocabulary.values(key)
        assert matrix.shape == (len(phrases), EMBED_DIM)
        assert torch.allclose(matrix.norm(dim=1), torch.ones(len(phrases)), atol=1e-4)
    assert len(table.sha256) == 64


def test_description_embeds_to_eight_rows_without_a_text_model():
    table = load_embedding_table()
    rows = table.embed(get_preset("renal cyst").description)
    assert rows.shape == (8, EMBED_DIM) and rows.dtype == torch.float32
    empty = table.embed(get_preset("renal cyst").description.only("location"))
    assert torch.equal(rows[0], empty[0])  # same location row
    assert not torch.allclose(rows[2], empty[2])  # density given vs unspecified


def test_table_rows_match_the_encoder():
    """The stored rows are what the installed encoder gives (offline load)."""
    from malenia.text import text_encoder

    table = load_embedding_table()
    fresh = text_encoder().encode(
        [template("density", "hypodense"), template("location", "left kidney")]
    )
    assert torch.allclose(fresh[0], table.value_embedding("density", "hypodense"), atol=1e-4)
    assert torch.allclose(fresh[1], table.value_embedding("location", "left kidney"), atol=1e-4)


def test_corrupt_or_missing_table_gives_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        EmbeddingTable(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="unreadable"):
        EmbeddingTable(bad)
