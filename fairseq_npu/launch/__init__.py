"""Helpers of the launch scripts in test/: published recipes, the fairseq-train command, FPS and summary.json.

Nothing here imports fairseq: test/common.sh runs them as ``python -m fairseq_npu.launch`` with
``FAIRSEQ_NPU_PLUGIN=off``, so that importing the package neither imports fairseq (seconds per call) nor
installs the hooks (tests/test_launch_boundary.py imports them with a fairseq that raises on import). They read the
plugin's fairseq-free modules (``glue_tasks``, ``precision``, ``argv``) and, to choose the device, ``device``
(torch only). Evaluation runs the plugin's one inference loop, ``fairseq-npu-evaluate`` (fairseq_npu/cli).
"""
