"""What the API tests expect of a refusal."""


def refused(response, field: str) -> str:
    """The response is a 400 naming `field`; its message, for more checks."""
    assert response.status_code == 400, (response.status_code, response.content[:300])
    body = response.json()
    assert field in body, body
    return " ".join(map(str, body[field]))
