"""One rank of a multi-process train stage: `python -m supportlm.train.rank PARAMS_JSON ROOT REPORT_JSON`.

`train.distributed.launch` starts one of these per process under `accelerate launch`; each runs the
same `run_train`, and rank 0 writes the stage report where the launcher reads it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from supportlm.config import parse_params
from supportlm.paths import Paths
from supportlm.train.run import run_train


def main(argv: list[str]) -> None:
    params_file, root, report_file = argv
    params = parse_params(json.loads(Path(params_file).read_text(encoding="utf-8")))
    report = run_train(params, Paths(root=Path(root)))
    if report:  # rank 0
        Path(report_file).write_text(json.dumps(report, default=str), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
