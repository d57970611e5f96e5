import pytest

from assistant.models import ModelVersion


@pytest.fixture
def lm():
    """An LM row, not a registration: nothing here generates, and a registration would queue
    evals."""
    return ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")
