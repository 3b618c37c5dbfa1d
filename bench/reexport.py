"""Re-run the end-of-job OpenVINO export on a model a training job already wrote.

The export step changes (as int8 accuracy control did) while trained models stay good: this
copies ``model.pt`` and its card (less the old OpenVINO section) into a fresh directory and
runs the job's own ``export_openvino`` there, with the card's calibration size and seed, on
folder channels of validation (and, only to record int8 against fp32, test) photos.

    .venv/bin/python bench/reexport.py --model runs/qA96/opt_ml/model \\
        --out runs/qA96/model_agree --validation runs/qA96/validation_channel \\
        --test runs/qA96/test_channel
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))

from bincounter import logs, openvino_ir  # noqa: E402
from bincounter.model import CARD_FILE, WEIGHTS_FILE, load_card  # noqa: E402
from bincounter.params import INT8_MIN_AGREEMENT  # noqa: E402
from bincounter.training.data import discover_channel  # noqa: E402
from bincounter.training.openvino_export import export_openvino  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a training job's model dir")
    parser.add_argument("--out", type=Path, required=True, help="new model dir (must not exist)")
    parser.add_argument("--validation", type=Path, required=True, help="folder channel")
    parser.add_argument("--test", type=Path, help="folder channel, recorded only")
    parser.add_argument("--min-agreement", type=float, default=INT8_MIN_AGREEMENT)
    args = parser.parse_args()
    logs.configure()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: pick a fresh --out (a model is never overwritten)")
    card = load_card(args.model)
    card.pop(openvino_ir.CARD_KEY, None)
    hps = card.get("hyperparameters", {})
    args.out.mkdir(parents=True)
    shutil.copy2(args.model / WEIGHTS_FILE, args.out / WEIGHTS_FILE)
    (args.out / CARD_FILE).write_text(json.dumps(card, indent=2))
    section = export_openvino(
        args.out,
        discover_channel("validation", args.validation),
        discover_channel("test", args.test) if args.test else None,
        calibration_photos=int(hps.get("int8_calibration_photos", 300)),
        min_agreement=args.min_agreement,
        seed=int(hps.get("seed", 0)),
    )
    print(json.dumps({k: v for k, v in section.items() if k != "files"}, indent=1))
    return 0 if "skipped" not in section else 1


if __name__ == "__main__":
    sys.exit(main())
