"""Name the first layer whose outputs differ, when a case's ``logits`` or ``activations`` are over their bound.

A stage says *that* the two models part; this says *where*.  Both models of
the case's setup are built in one process (``python -m parity.diagnose
JOB.json``), run once on the case's own input with a hook on every layer,
and the first pair of layers whose outputs differ beyond the logits stage's
bound is named (``parity.weight_transfer.diagnose_first_divergence``:
layer path on each side, shapes, max|Δ|, and whether the weights or the
layer itself differ).  It runs only for cases that fail at those two stages,
and once per setup: every method of a setup shares its models.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from parity.worker import WorkerJob, worker_environment

__all__ = ["diagnose", "DIAGNOSED_STAGES"]

DIAGNOSED_STAGES = ("logits", "activations")
DIAGNOSIS_TIMEOUT = 600.0


def diagnose(job: WorkerJob, input_array: np.ndarray, rtol: float) -> Dict:
    """Run the diagnosis for ``job``'s setup and weights on ``input_array``; a JSON-able dict.

    ``{"found": False}`` when every layer agrees, ``{"error": ...}`` when the
    diagnosis itself could not run; otherwise the ``Divergence`` fields plus
    its one-line ``message``.
    """
    with tempfile.TemporaryDirectory(prefix="parity-diagnose-") as work:
        work = Path(work)
        np.save(work / "input.npy", input_array, allow_pickle=False)
        (work / "job.json").write_text(job.to_json())
        (work / "settings.json").write_text(json.dumps({"rtol": rtol}))
        proc = subprocess.run(
            [sys.executable, "-m", "parity.diagnose", str(work)], cwd=work, env=worker_environment(job.threads),
            capture_output=True, text=True, timeout=DIAGNOSIS_TIMEOUT, stdin=subprocess.DEVNULL,
        )
        result = work / "diagnosis.json"
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stderr or proc.stdout)[-1500:]
            return {"error": f"the diagnosis exited with status {proc.returncode}: {tail}"}
        return json.loads(result.read_text())


def _run(work: Path) -> Dict:
    import paddle
    import torch

    from parity.weight_transfer import diagnose_first_divergence
    from parity.weights import build_paddle_model, build_torch_model, load_paddle_state_dict, load_torch_state_dict

    job = WorkerJob.from_json((work / "job.json").read_text())
    rtol = json.loads((work / "settings.json").read_text())["rtol"]
    torch.set_num_threads(job.threads)
    paddle.base.core.set_num_threads(job.threads)
    torch_model = build_torch_model(job.setup.model, load_torch_state_dict(Path(job.torch_weights)), job.dtype)
    paddle_model = build_paddle_model(job.setup.model, load_paddle_state_dict(Path(job.paddle_weights)), job.dtype)
    found = diagnose_first_divergence(torch_model, paddle_model, np.load(work / "input.npy"), rtol=rtol)
    if found is None:
        return {"found": False}
    data = asdict(found)
    data.update(found=True, message=found.message)
    return data


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m parity.diagnose WORK_DIR", file=sys.stderr)
        return 2
    work = Path(argv[0])
    (work / "diagnosis.json").write_text(json.dumps(_run(work), default=lambda value: list(value)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
