"""Model configurations. Choices the paper leaves open are ours, recorded in the model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class MaleniaConfig:
    name: str = "tiny"
    filters: tuple[int, ...] = (16, 32, 64, 128)  # encoder widths at 1, 1/2, 1/4, 1/8 resolution
    token_dim: int = 96
    num_tokens: int = 8
    num_heads: int = 4
    mask_dim: int = 32  # channels of F4 that mask vectors are dotted with
    cmki_layers: int = 3
    text_dim: int = 384
    temperature: float = 0.07
    use_cmki: bool = True  # ablation: False = prompt by token-attribute similarity only
    align_blocks: tuple[int, ...] = (0, 1, 2)  # ablation: (2,) = alignment at the last block only
    # Anatomy grounding: a head that maps a location phrase to the organ it names, trained on
    # organ masks (anatomy only, no lesion of any category). Weights without it leave it off.
    location_head: bool = False
    # A second view of the input in a soft-tissue window (HU low, high): the model's
    # -1000..1000 HU input squeezes a 10 HU difference (an HCC against its liver, a sarcoma
    # against muscle) into 0.5 % of its range. None: the single wide view of older weights.
    soft_tissue_window: tuple[float, float] | None = None
    patch_size: tuple[int, int, int] = (64, 64, 64)
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    extra: dict = field(default_factory=dict)

    @classmethod
    def tiny(cls) -> MaleniaConfig:
        """Laptop-CPU model: ~2.6 M parameters, 64^3 windows at 2 mm."""
        return cls()

    @classmethod
    def base(cls) -> MaleniaConfig:
        """GPU model: wider backbone and tokens, 96^3 windows at 1.5 mm."""
        return cls(
            name="base", filters=(32, 64, 128, 256), token_dim=192, num_tokens=16, num_heads=8,
            mask_dim=48, patch_size=(96, 96, 96), spacing_mm=(1.5, 1.5, 1.5),
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MaleniaConfig:
        data = dict(data)
        for key in ("filters", "align_blocks", "patch_size", "spacing_mm", "soft_tissue_window"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)
