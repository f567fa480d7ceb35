"""fairseq_npu: a fairseq --user-dir plugin to fine-tune RoBERTa and ALBERT on GLUE on NPU, CUDA and CPU.

Importing the package (fairseq does it for ``--user-dir fairseq_npu``, in every worker) installs the device
hooks once and registers the plugin's models, tasks and optimizers with fairseq's registries (its criterion is
stock ``sentence_prediction``).
With ``FAIRSEQ_NPU_PLUGIN=off`` (what the launch helpers run under) and fairseq not yet imported, it does neither:
only the modules that need no fairseq (``launch``, ``glue_tasks``, ``precision``, ``argv``) can be used then.
"""

__version__ = "0.1.0"

import os
import sys

PLUGIN_ENV = "FAIRSEQ_NPU_PLUGIN"  # "off": the fairseq-free modules only (see fairseq_npu.precision)


def _plugin_wanted() -> bool:
    # fairseq imports this package for --user-dir: the plugin is installed then, whatever the environment says
    return "fairseq" in sys.modules or os.environ.get(PLUGIN_ENV, "on") != "off"


if _plugin_wanted():
    try:
        import fairseq  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fairseq_npu needs fairseq. On Python 3.11/3.12 install the build that imports there, without its "
            "torchaudio requirement: pip install --no-deps ve-fairseq==0.12.3 (see README.md)"
        ) from err

    from fairseq_npu import hooks, quiet_logs

    quiet_logs.install()  # before fairseq composes its config: the Hydra deprecation warnings come from there
    hooks.install()

    from fairseq_npu import models, optim, tasks  # noqa: E402,F401  (each registers its modules)
