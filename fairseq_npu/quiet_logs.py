"""Silence the warnings a user of ``fairseq-train --user-dir fairseq_npu`` can do nothing about, and only those.

Each filter names one message (a regular expression on its start) and, where Python can attribute it, the module
that warns. Other warnings of the same category or from the same library still show.

* Hydra deprecations: fairseq 0.12 composes its config through Hydra's old ``hydra.experimental`` API with a
  ``# @package _group_`` header and ``strict``; Hydra >= 1.1 warns about each on every command. The schema-match
  warning is raised with a stack level that points above any frame (Python reports it as ``sys:1``), so it has no
  module to match and is filtered by its message alone.
* ``pin_memory`` on a host without an accelerator: fairseq always asks its DataLoader for pinned memory; on a CPU
  run torch warns once per epoch that it cannot pin. Nothing is lost: there is no device copy to speed up.

(fairseq's "Please install tensorboardX" line is gone because tensorboardX is a dependency; it is logged while
fairseq itself is imported, before any plugin code runs.)
"""

import logging
import sys
import warnings

# (message regex, category, module regex)
FILTERS = [
    (r"hydra\.experimental\.(initialize|compose)\(\) is no longer experimental", UserWarning,
     r"hydra\.experimental\."),
    (r"\s*The version_base parameter is not specified", Warning, r"hydra\.experimental\.initialize"),
    (r"In '\w+': Usage of deprecated keyword in package header '# @package _group_'", UserWarning,
     r"hydra\.core\.default_element"),
    (r"\s*The strict flag in the compose API is deprecated", UserWarning, r"hydra\.compose"),
    (r"\s*'\w+' is validated against ConfigStore schema with the same name", UserWarning, ""),
    (r"'pin_memory' argument is set as true but no accelerator is found", UserWarning,
     r"torch\.utils\.data\.dataloader"),
]

_installed = False


def install() -> None:
    """Add the filters once (importing the plugin again, or in every worker, adds nothing)."""
    global _installed
    if _installed:
        return
    for message, category, module in FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    _installed = True


def quiet_cli_logging() -> None:
    """For the plugin's own command-line tools: warnings and errors only on stderr.

    Importing fairseq already ran ``logging.basicConfig(level=DEBUG)`` (fairseq/models/wav2vec/
    wav2vec2_classification.py), which makes a later basicConfig a no-op and lets Hydra's DEBUG lines through, so
    the root level is set back explicitly."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)
