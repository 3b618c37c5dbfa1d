"""Shared fixtures; helpers live in ``support.py`` so test modules can import them."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import EXPORTING_HPS, build_tree, run_train


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Container tests last, in their own order: ``tests/container/conftest.py`` sets up the
    engine and builds the images in the background meanwhile."""
    items.sort(key=lambda item: item.get_closest_marker("container") is not None)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``/opt/ml/model`` of a real ``./train`` run on real photos (shared by the session)."""
    base = tmp_path_factory.mktemp("opt_ml_trained")
    build_tree(base, EXPORTING_HPS, {"train": 12, "validation": 6, "test": 6})
    result = run_train(base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return base / "model"
