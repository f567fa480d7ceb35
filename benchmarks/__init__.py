"""Benchmarks of fairseq_npu against stock fairseq and Hugging Face, run from the repository root as modules:

    python -m benchmarks.compare            stock fairseq-train vs test/train_performance_1p.sh vs HF Trainer best
    python -m benchmarks.run_all            every measurement, then docs/benchmarks.md
    python -m benchmarks.bench_throughput   the throughput table, row by row up to the plugin's best settings

docs/benchmarks.md lists them all. The modules are scripts first; what other code (the tests) may use is
``common`` (sizes and command lines) and ``op_counter``; fairseq's json logs are read by
``fairseq_npu.launch.training_log``, the plugin's one log reader.
"""
