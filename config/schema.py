"""The OpenAPI schema says which error statuses each operation may answer with."""

# DRF's error bodies are {"detail": "..."}, {"field": ["message", ...]} or a list of messages:
# documented as JSON of any shape.
ERRORS = {
    "400": "the request was refused: a field, a query parameter or the body",
    "401": "not signed in (send `Authorization: Token …`)",
    "403": "the role may not do this",
    "404": "no such object for this user, or no such page of results",
}
# A request line over the web server's limit never reaches Django: the server answers it
# itself. granian (compose.yaml's server) sends a 414 with no body for a target over 65,534
# bytes (tests/collection/test_web_load_bench.py); a proxy in front may have a lower limit and
# its own page. The schema documents granian's answer.
URI_TOO_LONG = {
    "description": "the request line (method, path and query string) is longer than the web "
    "server takes: the web server's own answer, with no body",
}

# A body over Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) is refused before any view reads it
# (config.urls.bad_request): e.g. a snapshot filter listing thousands of long prompts.
PAYLOAD_TOO_LARGE = {
    "description": "the request body is larger than the server takes (DATA_UPLOAD_MAX_MEMORY_SIZE)",
    "content": {"application/json": {"schema": {}}},
}


def document_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: add the statuses DRF answers with when a request
    fails (validation, authentication, permission, lookup) to every operation lacking them, the
    web server's 414, and the 413 of a body too large where an operation takes one."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, why in ERRORS.items():
                error = {"description": why, "content": {"application/json": {"schema": {}}}}
                operation["responses"].setdefault(status, error)
            operation["responses"].setdefault("414", URI_TOO_LONG)
            if "requestBody" in operation:
                operation["responses"].setdefault("413", PAYLOAD_TOO_LARGE)
    return result
