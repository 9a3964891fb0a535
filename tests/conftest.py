"""Shared fixtures: where the real data lives and small helpers for the tests.

The data in ``../shared/data`` (beside the repository) is read, never copied; set
``KERASNLP_PLUS_SHARED_DATA`` to point elsewhere.
"""
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from kerasnlp_plus.utils import shared_data_dir  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(
            f"shared data folder not found at {SHARED_DATA}; set KERASNLP_PLUS_SHARED_DATA"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def vocab_path(shared_data):
    return shared_data / "vocab" / "vocab.txt"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; excluded from CI with -m 'not slow'")


# bert4keras' own example scripts (tests/bert4keras_examples) are run as subprocesses by
# tests/test_bert4keras_examples.py; --doctest-modules must not import them (each one
# trains a model at import time).
collect_ignore_glob = ["bert4keras_examples/*"]
# The bert4keras 0.11.5 reference runner is a script run in a subprocess, not a test module.
collect_ignore = ["b4k_reference.py"]
