"""Where the real CT of ../shared/data/real_ct is: tests that read it skip with a reason in a
user's clone, where that folder is absent (CI always has it)."""

from __future__ import annotations

import pytest
from malenia.data.real_ct import real_ct_root

ROOT = real_ct_root()
needs_data = pytest.mark.skipif(
    ROOT is None,
    reason="../shared/data/real_ct is not here (a user's clone): real-CT tests skipped",
)
