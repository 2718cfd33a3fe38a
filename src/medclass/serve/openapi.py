"""Print the service's OpenAPI document: ``python -m medclass.serve.openapi > docs/openapi.json``."""

from __future__ import annotations

import json

from medclass.serve.app import openapi_spec

if __name__ == "__main__":
    print(json.dumps(openapi_spec(), indent=2, sort_keys=True))
