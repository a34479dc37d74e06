"""The one shape type: the catalog's sizes count the parameters Mistral publishes (shared/reference/models.md)."""

from __future__ import annotations

import pytest

from mixtral_cli.family.catalog import SHAPE_8X7B, SHAPE_8X22B
from mixtral_cli.family.shape import MixtralShape


@pytest.mark.parametrize(
    ("shape", "total", "active"), [(SHAPE_8X7B, 46.7e9, 12.9e9), (SHAPE_8X22B, 141e9, 39e9)], ids=["8x7b", "8x22b"]
)
def test_a_catalog_size_counts_the_published_parameters(shape, total, active):
    assert shape.parameter_count() == pytest.approx(total, rel=0.005)
    assert shape.parameter_count(active=True) == pytest.approx(active, rel=0.005)


def test_a_shape_without_its_vocabulary_has_no_parameter_count():
    adapter_base = MixtralShape(
        hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16
    )

    with pytest.raises(ValueError, match="vocabulary"):
        adapter_base.parameter_count()
