"""How often the parity gate accepts, calls unproven, or rejects, when the truth is known.

Synthetic paired outcomes (4 classes, `n` images each; only class 0 differs between the models)
go through the gate's own code (`paired_metrics` + `Gate.judge`) for many random splits:

- "at the margin": class 0 truly loses exactly the margin (1 pp; 2% lost, 1% gained). The
  false-accept rate (accepted, or accepted under --require-proof) must stay at most 5%.
- "equivalent": class 0 gains as often as it loses (2% each way). Rejections are false rejections.
- "3 pp worse": class 0 truly loses 3 pp (3% lost, none gained): how often the gate catches it.
- "agrees": no image changes its decision: how large a class must be before the gate can accept.

    python benchmarks/gate_simulation.py --trials 2000   # -> benchmarks/results/gate_simulation.{md,json}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vgg_edge.export.parity import Gate, Predictions, paired_metrics
from vgg_edge.fileio import write_bytes, write_json

CLASSES = 4
SIZES = (30, 90, 300, 1000, 3000)
SCENARIOS = {  # class 0's cell probabilities: both right, only reference right, only export right, both wrong
    "at the margin (-1 pp)": (0.92, 0.02, 0.01, 0.05),
    "equivalent (0 pp, 2% flips each way)": (0.91, 0.02, 0.02, 0.05),
    "3 pp worse": (0.92, 0.03, 0.0, 0.05),
    "agrees (no flips)": (0.95, 0.0, 0.0, 0.05),
}


def simulate(cells: tuple[float, ...], n: int, trials: int, rng: np.random.Generator) -> dict[str, float]:
    """Share of splits with each verdict, in default mode and under --require-proof."""
    y = np.repeat(np.arange(CLASSES), n)
    gate = Gate.for_precision("int8", 1.0)  # --require-proof rejects exactly what this does not accept
    counts = {"accepted": 0, "unproven": 0, "rejected": 0, "rejected (require-proof)": 0}
    for _ in range(trials):
        cell = np.zeros(len(y), int)
        cell[y == 0] = rng.choice(4, size=n, p=cells)
        ref_right, exp_right = np.isin(cell, (0, 1)), np.isin(cell, (0, 2))
        ref = np.eye(CLASSES)[np.where(ref_right, y, (y + 1) % CLASSES)]
        exp = np.eye(CLASSES)[np.where(exp_right, y, (y + 1) % CLASSES)]
        parity = {"evidence": {}, "paired": paired_metrics([Predictions("test", y, ref, exp)], [str(k) for k in range(CLASSES)])}
        status = gate.judge(parity).status
        counts[status] += 1
        counts["rejected (require-proof)"] += status != "accepted"
    return {k: v / trials for k, v in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gate_simulation"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    rows = [{"scenario": name, "images_per_class": n, **simulate(cells, n, args.trials, rng)} for name, cells in SCENARIOS.items() for n in SIZES]
    write_json(args.out.with_suffix(".json"), {"trials": args.trials, "seed": args.seed, "margin_pp": 1.0, "confidence": 0.95, "rows": rows,
                                              "seconds": round(time.perf_counter() - started, 1)})
    lines = [
        f"# Parity gate by simulation: {args.trials} random splits per row, margin 1 pp, 95% Tango intervals",
        "",
        f"Command: `python benchmarks/gate_simulation.py --trials {args.trials} --seed {args.seed}`. Four classes of `n` images;",
        "only class 0 differs between the models. `accepted` under --require-proof equals `accepted` (unproven becomes rejected).",
        "",
        "| scenario | images per class | accepted | unproven | rejected | rejected, --require-proof |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['scenario']} | {r['images_per_class']} | {r['accepted']:.3f} | {r['unproven']:.3f} | {r['rejected']:.3f} | {r['rejected (require-proof)']:.3f} |" for r in rows]
    write_bytes(args.out.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
