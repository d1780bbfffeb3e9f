"""Time and peak memory of simulating the full-size presets (contrasts streamed).

Usage: ``python benchmarks/simulate_memory.py [--presets sim1,sim2] [--R 960]``; each preset runs in
a fresh process so that its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, update_section  # noqa: E402

CHILD = """
import json, resource, sys, time
from lorein.data.problem import write_problem
from lorein.sim.presets import get_preset
from lorein.sim.simulate import simulate
preset, R, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
sim = simulate(get_preset(preset), R, seed=0, progress=False)
write_problem(out, sim.problem, truth=sim.truth)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"preset": preset, "R": sim.problem.acceleration, "seconds": seconds,
                  "peak_gib": peak, "n_lines": sim.problem.n_lines}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", default="sim1,sim2")
    parser.add_argument("--R", default="27,960", help="one R per preset")
    args = parser.parse_args()
    rows = []
    for preset, r in zip(args.presets.split(","), args.R.split(","), strict=True):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "p.h5"
            res = subprocess.run(
                [sys.executable, "-c", CHILD, preset, r, str(out)],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["file_mib"] = out.stat().st_size / 2**20
        print(row)
        rows.append(row)
    lines = [
        "## Simulation: time and peak memory (`benchmarks/simulate_memory.py`)",
        "",
        f"Machine: {machine()}",
        "",
        "| preset | R | lines | wall time [s] | peak RSS [GiB] | file [MiB] |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['preset']} | {r['R']:.1f} | {r['n_lines']} | {r['seconds']:.1f} | "
        f"{r['peak_gib']:.2f} | {r['file_mib']:.1f} |"
        for r in rows
    ]
    update_section("simulate_memory", "\n".join(lines))


if __name__ == "__main__":
    main()
