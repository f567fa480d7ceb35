"""One command for every benchmark: builds the data, compares stock, the launch script and the HF Trainer (section
P), measures throughput, scaling and hook overhead, trains the accuracy runs, counts the host work per update,
draws the plots and rewrites docs/benchmarks.md.

    python -m benchmarks.run_all                  # everything (about an hour on 2 idle cores)
    python -m benchmarks.run_all --only throughput,scaling
    python -m benchmarks.run_all --render-only    # docs/benchmarks.md from benchmarks/results/*.json
"""

import argparse
import sys

from benchmarks import (bench_accuracy, bench_host_overhead, bench_scaling, bench_throughput, compare, glue_data,
                        padding_stats, report)

STEPS = {"compare": compare.main, "throughput": bench_throughput.main, "scaling": bench_scaling.main,
         "accuracy": bench_accuracy.main, "host_ops": bench_host_overhead.main}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated subset of {', '.join(STEPS)}")
    p.add_argument("--render-only", action="store_true")
    a = p.parse_args(argv)
    if not a.render_only:
        unknown = set(a.only.split(",")) - set(STEPS)
        if unknown:
            p.error(f"--only: unknown step(s) {sorted(unknown)}; choose from {', '.join(STEPS)}")
        glue_data.main([])
        padding_stats.main()
        for step in a.only.split(","):
            STEPS[step]([])
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
