"""The README's example events must validate against the contracts (and the schema file must be current)."""

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from reranker.contracts import InteractionEvent, ServedListEvent, json_schemas

ROOT = Path(__file__).resolve().parents[1]


def _readme_examples() -> dict[str, dict]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", text, flags=re.S)
    return {name: json.loads(body) for name, body in blocks}


def test_readme_examples_validate():
    examples = _readme_examples()
    InteractionEvent.model_validate(examples["InteractionEvent"])
    ServedListEvent.model_validate(examples["ServedListEvent"])


def test_committed_schema_file_is_current():
    assert json.loads((ROOT / "schemas" / "events.json").read_text()) == json.loads(
        json.dumps(json_schemas())
    )


@pytest.mark.parametrize("bad", [{"position": -1}, {"propensity": 0}, {"propensity": 1.5},
                                 {"interaction_type": "teleport"}, {"unknown_field": 1}])  # fmt: skip
def test_contract_rejects_bad_events(bad):
    event = _readme_examples()["InteractionEvent"]
    with pytest.raises(ValidationError):
        InteractionEvent.model_validate({**event, **bad})
