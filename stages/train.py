"""Train: LoRA / QLoRA fine-tune of the base model on the formatted splits; the best checkpoint is the output.

    dvc repro train
    python stages/train.py          # same code, outside DVC
    dvc exp run -S lora.r=32        # one knob changed (a new run key: never resumes the old run)

Reads data/formatted/{train,val}.jsonl and models/base/. Writes models/adapter/ (best adapter,
tokenizer, supportlm_train.json), models/checkpoints/<run_key>/ (resumable checkpoints + log.jsonl;
a killed run continues from its last complete checkpoint), reports/train.json, reports/train.md,
reports/plots/train/loss.png, and the MLflow run in mlflow.db + mlruns/.
"""

from supportlm.stage import stage_main
from supportlm.train.run import run_train


def main() -> None:
    stage_main("train", run_train)


if __name__ == "__main__":
    main()
