"""``python -m fairseq_npu.hooks``: the hooks, one line each; ``--markdown`` the table of docs/hooks.md;
``--json`` the attributes replaced in this process, as ``module.qualname``."""

import json
import sys

from fairseq_npu import hooks

if "--json" in sys.argv[1:]:
    print(json.dumps(hooks.installed(), indent=1))
elif "--markdown" in sys.argv[1:]:
    print(hooks.markdown_table())
else:
    print(hooks.describe())
