import pytest

from model_helpers import tiny_cfg


@pytest.fixture
def cfg():
    return tiny_cfg()
