"""The GPU profile's base-model presets, each through the real path on a tiny same-architecture twin.

For every preset (the default Qwen2.5-7B-Instruct and the seed's Llama-2, Mistral, Phi-2, Gemma):
a random-weight 2-layer model of that `model_type`, with a small template that behaves like the
real one (Llama-2's <<SYS>>, Mistral-v0.2's strict alternation, Gemma's "System role not
supported", Phi-2's none), is served by a fake Hub (huggingface_hub's `model_info` and
`snapshot_download` patched; the pinned revision and the token are checked). Then the project's
own code runs: base_model.resolve -> format_split -> LoRA training with `target_modules: auto`
-> merge, and the merged dir must carry the template where TGI reads it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_utils import SYSTEM, tiny_rows, tiny_tokenizer

from supportlm import hub
from supportlm.config import BaseModelParams, LoraParams, TrainParams
from supportlm.errors import ConfigError, DataError
from supportlm.tokenizer import load_tokenizer
from supportlm.train import base_model
from supportlm.train.merge import merge
from supportlm.train.trainer import LoRAFinetuneRecipe

CHATML_DEFAULT_SYSTEM = (  # Qwen2.5: ChatML, adds its own system turn when there is none
    "{%- if messages[0]['role'] != 'system' -%}{{ '<|im_start|>system\nYou are Qwen.<|im_end|>\n' }}{%- endif -%}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2 = (  # meta-llama/Llama-2-7b-chat-hf's template (system inside the first [INST] as <<SYS>>)
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL_V02 = (  # mistralai/Mistral-7B-Instruct-v0.2: user/assistant only, strictly alternating
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA = (  # google/gemma-7b-it: rejects a system turn outright
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
TEMPLATES = {
    "Qwen/Qwen2.5-7B-Instruct": (CHATML_DEFAULT_SYSTEM, "native"),
    "meta-llama/Llama-2-7b-chat-hf": (LLAMA2, "native"),
    "mistralai/Mistral-7B-Instruct-v0.2": (MISTRAL_V02, "folded"),
    "microsoft/phi-2": (None, "native"),  # INSTRUCT_OUTPUT renders the system prompt itself
    "google/gemma-7b-it": (GEMMA, "folded"),
}


def test_every_preset_has_a_twin_here():
    assert set(TEMPLATES) == set(base_model.PRESETS)
    assert base_model.PRESETS[hub.DEFAULT_OPEN_MODEL].gated is False


def twin(model_type: str, template: str | None, path: Path) -> Path:
    """A seeded random 2-layer model of `model_type` with the tiny tokenizer and `template`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = tiny_tokenizer()
    tok.chat_template = template
    dims = {
        "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
    }
    if model_type == "gemma":
        dims["head_dim"] = 16
    config = AutoConfig.for_model(model_type, **dims)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """huggingface_hub's reads served from local twins; records every call."""
    import huggingface_hub

    repos: dict[str, tuple[Path, str, object]] = {}
    calls: list[tuple[str, str, str | None]] = []

    def model_info(repo_id, revision=None, token=None, timeout=None):
        calls.append(("model_info", repo_id, revision))
        _, sha, gated = repos[repo_id]
        assert revision == sha, "the pinned revision must reach the Hub"
        return SimpleNamespace(sha=sha, gated=gated)

    def snapshot_download(repo_id, repo_type=None, revision=None, local_dir=None, allow_patterns=None, token=None):
        calls.append(("snapshot_download", repo_id, revision))
        src, _, gated = repos[repo_id]
        if gated and not token:
            raise AssertionError("a gated repo was downloaded without a token")
        shutil.copytree(src, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True)  # what huggingface_hub leaves there
        return local_dir

    monkeypatch.setattr(huggingface_hub, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return SimpleNamespace(repos=repos, calls=calls)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_preset_resolves_formats_trains_and_merges(name, fake_hub, tmp_path, monkeypatch):
    preset = base_model.PRESETS[name]
    template, system_role = TEMPLATES[name]
    fake_hub.repos[name] = (twin(preset.model_type, template, tmp_path / "hub"), preset.revision,
                            "manual" if preset.gated else False)
    if preset.gated:
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    root = tmp_path / "proj"
    out = base_model.resolve(BaseModelParams(base=name), root / "models" / "base")

    assert not (out / ".cache").exists()
    tok = load_tokenizer(out)
    assert tok.chat_template
    assert (system_role == "folded") == tok.chat_template.startswith(
        base_model.chat_template.FOLD_MARK), tok.chat_template[:80]
    # format: every row keeps the system prompt and has assistant tokens to learn from
    rows = tiny_rows(24, tok)
    assert all(SYSTEM in r["text"] and r["n_assistant_tokens"] > 0 for r in rows)
    data = root / "data" / "formatted"
    data.mkdir(parents=True)
    for split, part in (("train", rows[:16]), ("val", rows[16:])):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    # train with target_modules=auto: the architecture's own projection names
    train = TrainParams(seed=1, max_steps=2, batch_size=4, gradient_accumulation_steps=1, eval_steps=2,
                        save_steps=2, train_rows=None, val_rows=None, max_length=128, tracking="none",
                        baseline_steps=0)
    recipe = LoRAFinetuneRecipe(train, LoraParams(r=4, alpha=8), model_dir=out, data_dir=data,
                                checkpoints_root=tmp_path / "ckpt", progress=False)
    recipe.setup()
    result = recipe.train()
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.best_val_loss))
    from supportlm.train.lora_model import AUTO_TARGETS

    assert sorted(recipe.target_modules) == sorted(AUTO_TARGETS[preset.model_type])
    adapter = recipe.export_adapter(root / "models" / "adapter")
    merged = root / "models" / "merged"
    merge(out, adapter, merged, dtype="float32", device="cpu")
    # TGI reads the template from tokenizer_config.json; transformers 5 from chat_template.jinja
    config = json.loads((merged / "tokenizer_config.json").read_text())
    assert config["chat_template"] == (merged / "chat_template.jinja").read_text() == tok.chat_template
    if preset.gated:
        assert [c[0] for c in fake_hub.calls] == ["model_info", "snapshot_download"]


def test_gated_preset_without_token_fails_before_any_download(fake_hub, tmp_path):
    name = "google/gemma-7b-it"
    fake_hub.repos[name] = (tmp_path / "unused", base_model.PRESETS[name].revision, "manual")
    with pytest.raises(ConfigError) as err:
        base_model.resolve(BaseModelParams(base=name), tmp_path / "models" / "base")
    msg = str(err.value)
    assert name in msg and "gated" in msg and "HF_TOKEN" in msg and hub.DEFAULT_OPEN_MODEL in msg
    assert [c[0] for c in fake_hub.calls] == ["model_info"]
    assert not (tmp_path / "models" / "base").exists()


@pytest.mark.parametrize("revision", [None, "main", "a09a354"])
def test_hub_model_needs_a_pinned_commit(revision, fake_hub, tmp_path):
    with pytest.raises(ConfigError, match=r"org/not-a-preset.*pinned revision.*model_info\('org/not-a-preset'\)"):
        base_model.resolve(BaseModelParams(base="org/not-a-preset", revision=revision), tmp_path / "base")
    assert fake_hub.calls == []  # nothing reached the network


def test_unreachable_hub_names_the_repo_and_the_local_copy(tmp_path):
    """A real request to a closed port on 127.0.0.1 (no network needed): the clear DataError."""
    import subprocess

    code = (
        "from supportlm.train import base_model; from supportlm.config import BaseModelParams\n"
        "from pathlib import Path\n"
        f"base_model.resolve(BaseModelParams(base='{hub.DEFAULT_OPEN_MODEL}'), Path(r'{tmp_path}') / 'base')\n"
    )
    env = {**__import__("os").environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "DataError" in proc.stderr and hub.DEFAULT_OPEN_MODEL in proc.stderr
    assert "cannot reach the Hugging Face Hub" in proc.stderr and "--local-dir" in proc.stderr


def test_template_file_that_is_missing_is_named(tmp_path):
    from model_utils import tiny_model_dir

    src = tiny_model_dir(tmp_path / "local")
    with pytest.raises(ConfigError, match="base_model.chat_template: .*nope.jinja is not a file"):
        base_model.resolve(BaseModelParams(base=str(src), chat_template=str(tmp_path / "nope.jinja")),
                           tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_template_that_cannot_take_a_system_prompt_even_folded(tmp_path):
    from model_utils import tiny_model_dir

    src = tiny_model_dir(tmp_path / "local")
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] if m['role'] == 'assistant' else '' }}{% endfor %}")
    with pytest.raises(DataError, match="cannot render a system prompt even folded"):
        base_model.resolve(BaseModelParams(base=str(src), chat_template=str(bad)), tmp_path / "base")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_prepared_template_renders_the_same_in_tgis_engine(name):
    """TGI renders chat templates with minijinja, not jinja2: the folded and documented templates
    must give TGI byte-for-byte the text the model was trained on."""
    import minijinja

    from supportlm import chat_template

    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATES[name][0]
    chat_template.prepare(tok)
    env = minijinja.Environment()

    def raise_exception(message):
        raise minijinja.TemplateError(message)

    env.add_function("raise_exception", raise_exception)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Where is my order?"},
                {"role": "assistant", "content": "It ships today."}, {"role": "user", "content": "Thanks!"}]
    for gen in (True, False):
        ours = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        tgi = env.render_str(tok.chat_template, messages=messages, add_generation_prompt=gen,
                             bos_token=tok.bos_token, eos_token=tok.eos_token)
        assert tgi == ours and SYSTEM in tgi


def test_saved_tokenizer_files_do_not_depend_on_how_it_was_loaded(tmp_path):
    """transformers writes `local_files_only` (HF_HUB_OFFLINE) into tokenizer_config.json: the same model
    saved online and offline must still be the same bytes, or DVC reruns everything downstream."""
    from transformers import AutoTokenizer

    from supportlm import chat_template

    src = tmp_path / "src"
    tiny_tokenizer().save_pretrained(src)
    saved = []
    for offline in (True, False):
        tok = AutoTokenizer.from_pretrained(str(src), local_files_only=offline)
        out = tmp_path / f"out-{offline}"
        chat_template.save_tokenizer(tok, out)
        saved.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert saved[0] == saved[1]
    config = json.loads(saved[0]["tokenizer_config.json"])
    assert not set(chat_template.LOAD_TIME_KEYS) & set(config) and config["chat_template"]
