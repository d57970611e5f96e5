"""schemathesis hooks for bench/schemathesis_roles.py (SCHEMATHESIS_HOOKS=bench.schemathesis_hooks).

Some requests the schema allows are refused, rightly, by a rule no OpenAPI 3.0 schema can say:
an id no object has, a field another field makes required, a path that must exist inside the
server's model or data roots, an address the server will not call. schemathesis.toml lets these
operations answer 400 (and 413, a body over the upload limit) to schema-valid data without
`positive_data_acceptance` failing; the check below takes that allowance back for every refusal
but the ones listed here: a schema-valid request answered 400/413 must name only fields listed
for its operation, each with one of that field's listed messages. Anything else fails as
"Undocumented refusal of schema-valid data". SECURITY.md (round 5) gives each rule its reason.
"""

from __future__ import annotations

import json
import re

import schemathesis

NO_SUCH_ID = r'^Invalid pk ".*" - object does not exist\.$'  # DRF's words for an unknown id
TOO_LARGE = r"^The request body is larger than the server takes"  # config.urls.bad_request

# (method, path) -> {field: [message patterns]}; "detail" is a refusal of the whole request.
DOCUMENTED_REFUSALS: dict[tuple[str, str], dict[str, list[str]]] = {
    ("POST", "/api/campaigns/"): {
        "lm_version": [NO_SUCH_ID],  # also a preference model's id: only LMs are offered
        "prompt": [NO_SUCH_ID],
        "k": [r"^A pairwise campaign offers k = 2", r"^A mixed campaign ranks k >= 3"],
        "detail": [TOO_LARGE],
    },
    ("PATCH", "/api/campaigns/{id}/"): {
        "lm_version": [NO_SUCH_ID],
        "prompt": [NO_SUCH_ID],
        "k": [r"^A pairwise campaign offers k = 2", r"^A mixed campaign ranks k >= 3"],
        "is_active": [r"^This campaign is closed"],
        "detail": [TOO_LARGE],
    },
    ("POST", "/api/snapshots/"): {
        "filter": [
            r"^no judgements match this filter$",
            r'^imports selects imported data: add "imported" to sources$',
            r"^date_(from|to): .* has a UTC offset past ±15:59, which no time zone uses$",
        ],
        "detail": [TOO_LARGE],
    },
    ("POST", "/api/model-versions/"): {
        "path": [r"^no model folder or file at ", r"inside the model roots"],
        "url": [
            r"^an OpenAI-compatible backend needs the server's URL$",
            r"is not a valid URL$",
            r"is not an http\(s\) URL",
            r"is not a host name$",
            r"^a cloud metadata service is not a model server$",
            r"is a link-local, multicast or reserved address$",
            r"is a private or loopback address",
        ],
        "backend": [r"^preference models run locally \(transformers\)$"],
        "detail": [TOO_LARGE],
    },
    ("POST", "/api/training-runs/"): {
        "base_model": [NO_SUCH_ID, r"^context distillation trains a language model$"],
        "snapshot": [NO_SUCH_ID, r"^this kind trains on a dataset snapshot$"],
        "prompt": [
            NO_SUCH_ID,
            r"^only context distillation reads a prompt$",
            r"^context distillation needs a prompt to distil$",
        ],
        "pmp_sources": [
            r"^preference-model pre-training needs sources$",
            r"^source \d+: no file or folder .* inside the data roots",
        ],
        "config": [
            r"^a \w+ run trains with loss=",  # loss follows the kind (pm: ranked, …)
            r"^unknown keys: ",  # a setting of another kind's config (the schema lists all three)
        ],
        "detail": [TOO_LARGE],
    },
    ("POST", "/api/eval-runs/"): {
        "model_version": [NO_SUCH_ID],
        "snapshot": [NO_SUCH_ID, r"^held-out comparisons need a dataset snapshot$"],
        "suite": [r" does not apply to a "],  # hhh/toxicity are for LMs, held_out for PMs
        "detail": [TOO_LARGE],
    },
}


def _messages(body) -> list[tuple[str, str]]:
    """(field, message) pairs of a DRF error body."""
    if isinstance(body, dict):
        pairs = []
        for field, value in body.items():
            for message in value if isinstance(value, list) else [value]:
                pairs.append((str(field), str(message)))
        return pairs
    return [("detail", str(message)) for message in (body if isinstance(body, list) else [body])]


@schemathesis.check
def refusals_are_documented(ctx, response, case):
    """A schema-valid request refused with 400/413 names only documented fields and rules."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 413):
        return None
    rules = DOCUMENTED_REFUSALS.get((case.operation.method.upper(), case.operation.path))
    if rules is None:
        return None  # not allowed at all there: positive_data_acceptance fails it already
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"Undocumented refusal of schema-valid data (not JSON)\n{response.content[:300]!r}"
        ) from None
    undocumented = [
        f"{field}: {message}"
        for field, message in _messages(body)
        if not any(re.search(pattern, message) for pattern in rules.get(field, []))
    ]
    if undocumented:
        raise AssertionError(
            "Undocumented refusal of schema-valid data (not a rule listed in "
            "bench/schemathesis_hooks.py and SECURITY.md)\n" + "\n".join(undocumented)
        )
    return None
