import pytest
from rest_framework.test import APIClient

from assistant.models import ModelVersion


@pytest.fixture
def api(adam):
    """An API client signed in as the admin that answers errors instead of raising them."""
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(adam)
    return client


@pytest.fixture
def lm():
    """An LM row, not a registration: nothing here generates, and a registration would queue
    evals."""
    return ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")
