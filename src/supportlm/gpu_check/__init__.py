"""GPU check (issue 14): the project's QLoRA, resume, merge, generation and bitsandbytes code on a 7B shape.

It runs the project's own code on a random-weight model with a real 7B architecture, in one run of
about 5 minutes on one H200. The package: config (shapes, CheckConfig), synthetic (tokenizer, model,
rows), probe (device, versions, memory), runner (Run, run_step), training (QLoRA runs and children),
steps (the seven steps), report (gpu_check.json / .md), check (run_check), cli (main).

    python -m supportlm.gpu_check                # Mistral-7B shape on CUDA (scripts/gpu_check_device.sh)
    python -m supportlm.gpu_check --tiny         # a 2-layer, 64-wide Llama on CPU in seconds (the unit test)
    python -m supportlm.gpu_check --layers 1 --hidden 256 --intermediate 512 --heads 4 --kv-heads 2 \\
        --seq-len 128 --batch-size 2 --steps 6   # the full code path shrunk to fit a CPU
    make gpu-check [TINY=1]

Why random weights: a lent GPU has no network and no 7B checkpoint, and speed and memory depend on
the shapes (hidden 4096, 32 heads, vocab 32000), not on the values. The timed parts use
`--layers` (4) of the architecture's layers; the full depth (32) is built once for the memory
figures and the 7B generation speed. Tokenizer: a word-level one built in-process (no download)
whose vocabulary is exactly the config's; data: synthetic chat rows formatted by
`supportlm.data.format`, long enough that every row fills `--seq-len` tokens.

Steps (each timed with its peak memory; a failure is recorded with its error and the rest still run):

1. build: model dir (config + random bf16 weights on CUDA / fp32 on CPU + tokenizer), train/val rows.
2. qlora: `LoRAFinetuneRecipe`, method qlora, precision auto (bf16 on CUDA), gradient checkpointing,
   batch 8 x 1024 tokens, 20 steps; its final adapter is the reference for step 3.
3. resume: the same run in a child process, SIGKILLed once a checkpoint is complete and two more
   steps are logged, then resumed in a new child: it must reach the same final step, and its final
   LoRA B weights and losses must match the uninterrupted run (tolerance: exact on CPU, bf16 noise
   on CUDA; the difference between two uninterrupted runs at the kill step is recorded beside it).
4. merge: `supportlm.train.merge` (bf16 on the GPU); one merged weight is checked against W + s*B@A.
5. generate: `HFEngine` on the merged model at batch 1 and 8, exactly N new tokens (EOS masked).
6. bnb: `torch_quant.load` bnb_int8, bnb_nf4 and torchao_int4 (the 4-bit GPU format that replaced
   GPTQ), then a few tokens through `HFEngine`.
7. full_depth: the full-depth model built on the device in bf16: weight memory and generation speed,
   then saved and trained for a few QLoRA steps at batch 8 x 1024 (the 7B QLoRA memory and speed).

Writes reports/gpu/gpu_check.json (keys in DESIGN.md), gpu_check.md and logs/ (the child
processes' output); exits 1 when any step failed.
"""
