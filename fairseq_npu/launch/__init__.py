"""Helpers of the launch scripts in test/: published recipes, the fairseq-train command, FPS and summary.json.

Everything here but ``evaluate`` needs only the standard library, so test/common.sh can run it without importing
fairseq (``fairseq_npu/__init__.py`` does, which costs seconds per call): the modules import each other
relatively and nothing from the rest of the plugin.
"""
