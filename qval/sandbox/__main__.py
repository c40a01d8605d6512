"""``python -m qval.sandbox``: print which defense layers are active on this machine."""

import json

from .run import sandbox_report

print(json.dumps(sandbox_report(), indent=2))
