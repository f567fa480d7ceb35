"""One command for every benchmark: builds the data, measures throughput, scaling and hook overhead, trains the
accuracy runs, counts the host work per update, draws the plots and rewrites docs/benchmarks.md.

    python benchmarks/run_all.py                  # everything (about an hour on 2 idle cores)
    python benchmarks/run_all.py --only throughput,scaling
    python benchmarks/run_all.py --render-only    # docs/benchmarks.md from benchmarks/results/*.json
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_accuracy  # noqa: E402
import bench_host_overhead  # noqa: E402
import bench_scaling  # noqa: E402
import bench_throughput  # noqa: E402
import glue_data  # noqa: E402
import padding_stats  # noqa: E402
import report  # noqa: E402

STEPS = {"throughput": bench_throughput.main, "scaling": bench_scaling.main, "accuracy": bench_accuracy.main,
         "host_ops": bench_host_overhead.main}


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
