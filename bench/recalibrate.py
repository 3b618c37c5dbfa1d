"""Re-run the end-of-job decision rule and calibration on a model a training job already wrote.

The calibration step changes (as the per-count biases did) while trained models stay good: this
copies a model directory (weights, OpenVINO IR, check photos) to a fresh one and runs the job's
own steps there on the validation photos only: the temperature and biases
(``calibrate.fit_on_validation``), the rule chosen on the same probabilities
(``train.summarize`` + ``pick_rule``), the confidence and verdict thresholds (``calibrate``),
and writes them into the copy's card, with the reports under ``<out>/calibration``. The test split
is not read: measure it afterwards, once, with ``bench/audit_quality.py``.

    .venv/bin/python bench/recalibrate.py --model runs/q96/opt_ml/model \\
        --out runs/q96/model_recal --validation runs/q96/audit2/validation_channel
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))

from bincounter import logs  # noqa: E402
from bincounter.counting import head_for_loss  # noqa: E402
from bincounter.files import atomic_write_json  # noqa: E402
from bincounter.model import CARD_FILE  # noqa: E402
from bincounter.training import calibrate  # noqa: E402
from bincounter.training.channels import FolderChannel  # noqa: E402
from bincounter.training.data import discover_channel  # noqa: E402
from bincounter.training.scoring import load_trained  # noqa: E402
from bincounter.training.train import FIGURES, pick_rule, summarize  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a training job's model dir")
    parser.add_argument("--out", type=Path, required=True, help="new model dir (must not exist)")
    parser.add_argument("--validation", type=Path, required=True, help="folder channel")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logs.configure()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: pick a fresh --out (a model is never overwritten)")
    model, card, hp, ctx, precision = load_trained(args.model)
    samples = discover_channel("validation", args.validation)
    # The job's own steps, in its order (``train.calibrate_selected``): one read of validation.
    fitted = calibrate.fit_on_validation(
        model,
        {"validation": FolderChannel("validation", samples)},
        hp,
        ctx,
        workers=args.workers,
        precision=precision,
        head=head_for_loss(hp.loss),
    )
    loss, by_rule = summarize(fitted.probabilities[1], fitted.labels)
    rule = pick_rule(hp, by_rule)
    sections = calibrate.calibrate(
        fitted, None, ctx, decision=rule, out_dir=args.out / "calibration"
    )
    shutil.copytree(args.model, args.out, dirs_exist_ok=True)
    card.update(decision=rule, **sections)
    card["metrics"].update(
        decision=rule,
        validation={"loss": loss, **{k: by_rule[rule][k] for k in FIGURES}},
        validation_by_rule={r: {k: v[k] for k in FIGURES} for r, v in by_rule.items()},
    )
    atomic_write_json(args.out / CARD_FILE, card)
    print(
        f"{args.out}: rule {rule}, T={sections['calibration']['temperature']:.3f}, "
        f"biases {sections['calibration']['bias']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
