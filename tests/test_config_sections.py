"""Each architecture's knobs are its own config section (`model.<arch>.<knob>`); configs
saved before the sections, with flat model keys, still load (each key in the section of
every architecture that took it over) and resume to the same parameters; a flat key given
now is refused in one line naming its new key."""

from __future__ import annotations

import json
import shutil

import pytest

from longctx.config import Config, ConfigError, ModelConfig, from_dict, parse_overrides
from longctx.models import archs
from tests.conftest import REPO

# A model section as the code before the sections wrote it (`json.dumps(asdict(cfg))`):
# every architecture's knobs flat beside the decoder's shape.
OLD_MODEL = {
    "arch": "xl", "attention_impl": "reference", "bptt_segments": 2, "bptt_stop_gradient": False,
    "clamp_len": 30, "ctx_len": 40, "d_head": 32, "d_inner": 256, "d_model": 64, "dropatt": 0.0,
    "dropout": 0.0, "dtype": "float32", "init_std": 0.02, "matmul_precision": "default",
    "mem_len": 48, "n_head": 2, "n_layer": 2, "n_mem_tokens": 5, "n_token": 0,
    "pre_lnorm": False, "remat": False, "same_length": True, "seq_len": 80, "tgt_len": 24,
    "untie_r": False, "window": 40,
}
# Where each flat key lives now.
MOVED = {"tgt_len": ["model.xl.tgt_len", "model.rmt.seg_len"], "mem_len": ["model.xl.mem_len"],
         "same_length": ["model.xl.same_length"], "attention_impl": ["model.xl.attention_impl"],
         "bptt_segments": ["model.xl.bptt_segments", "model.rmt.bptt_segments"],
         "bptt_stop_gradient": ["model.xl.bptt_stop_gradient", "model.rmt.bptt_stop_gradient"],
         "window": ["model.window.window"], "seq_len": ["model.window.seq_len"],
         "ctx_len": ["model.vanilla.ctx_len"], "n_mem_tokens": ["model.rmt.n_mem_tokens"]}


def _as_old_code_wrote_it(raw: dict) -> dict:
    """A config dict of today in the format before the sections: the run's knobs flat in
    `model` (one `tgt_len`, `bptt_*` for XL and RMT alike, as the old code had them)."""
    old = json.loads(json.dumps(raw))
    model = old["model"]
    sections = {name: model.pop(name) for name in list(model) if isinstance(model[name], dict)}
    for flat, new in MOVED.items():
        _, arch, knob = new[0].split(".")
        model[flat] = sections[arch][knob]
    return old


def test_reads_replacements_and_hashing():
    m = ModelConfig()
    assert set(archs.names()) <= set(m.sections) and m.xl.mem_len == m.sections["xl"].mem_len
    a = m.replace(n_layer=3, xl={"mem_len": 16})
    b = m.replace(xl=m.xl.replace(mem_len=16)).replace(n_layer=3)
    assert a == b and hash(a) == hash(b) and a.xl.mem_len == 16 and m.xl.mem_len == 64
    assert a != m and len({a, b, m}) == 2
    assert parse_overrides(Config(), ["model.xl.mem_len=16", "model.n_layer=3"]).model == a
    with pytest.raises(AttributeError, match="'model.mem_len' is now 'model.xl.mem_len'"):
        _ = m.mem_len


def test_flat_keys_given_now_name_their_new_key():
    for flat, new in MOVED.items():
        with pytest.raises(ConfigError) as err:
            parse_overrides(Config(), [f"model.{flat}=1"])
        msg = str(err.value)
        assert "\n" not in msg and f"'model.{flat}' is now '{new[0]}'" in msg, msg
        assert all(f"'{k}'" in msg for k in new), msg
    with pytest.raises(ConfigError, match="'model.xl.mem_lenn': unknown key .*mem_len"):
        parse_overrides(Config(), ["model.xl.mem_lenn=1"])
    with pytest.raises(ConfigError, match="'model.lstm': no registered architecture"):
        parse_overrides(Config(), ["model.lstm.size=1"])
    with pytest.raises(ConfigError, match="'model.xl': a section .* model.xl.KEY=VALUE"):
        parse_overrides(Config(), ["model.xl=3"])


def test_an_old_flat_config_loads_into_the_sections():
    cfg = from_dict({"name": "old", "model": OLD_MODEL, "train": {"batch_size": 4}})
    m = cfg.model
    assert (m.xl.tgt_len, m.xl.mem_len, m.xl.same_length, m.xl.bptt_segments) == (24, 48, True, 2)
    assert (m.rmt.seg_len, m.rmt.n_mem_tokens, m.rmt.bptt_segments) == (24, 5, 2)
    assert (m.window.window, m.window.seq_len, m.vanilla.ctx_len) == (40, 80, 40)
    assert m.clamp_len == 30 and m.n_layer == 2 and cfg.train.batch_size == 4
    # saved again, it is in the new format and reads back to the same config
    assert from_dict(json.loads(cfg.to_json())) == cfg
    assert "mem_len" not in cfg.to_dict()["model"] and cfg.to_dict()["model"]["xl"]["mem_len"] == 48


def test_an_old_key_no_architecture_took_over_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        from_dict({"model": {**OLD_MODEL, "ext_len": 0}})
    assert "\n" not in str(err.value) and "'model.ext_len'" in str(err.value)
    with pytest.raises(ConfigError, match="'model.toy': no registered architecture"):
        from_dict({"model": {"toy": {"seg_len": 4}}})


def test_saved_runs_of_before_the_sections_load():
    """The GPU study's run directories (written before the sections) load as their runs."""
    runs = sorted((REPO / "experiments" / "results" / "gpu_study" / "runs").glob("*/config.json"))
    assert len(runs) == 3
    for path in runs:
        raw = json.loads(path.read_text())
        assert "mem_len" in raw["model"] and "xl" not in raw["model"]  # the old format
        cfg = archs.check_run(from_dict(raw))
        assert cfg.model.xl.mem_len == raw["model"]["mem_len"]
        assert cfg.model.window.window == raw["model"]["window"]
        assert archs.span(cfg.model) == 512


def test_a_run_saved_before_the_sections_resumes_to_the_same_parameters(tiny_run, data_dir,
                                                                         tmp_path):
    """The smoke XL run rewritten as the old code saved it (config.json and every
    checkpoint's config), its last checkpoint removed: `train` resumes it (the saved configs
    migrate and match today's) and ends at the same parameters; `info` reads it."""
    from longctx.rundir import load_run
    from longctx.train.loop import params_sha256, train
    from tests.conftest import smoke_config

    workdir = tmp_path / "old"
    shutil.copytree(tiny_run, workdir)
    saved = [workdir / "config.json", *sorted(workdir.glob("checkpoints/*/config/metadata"))]
    assert len(saved) >= 3
    for path in saved:
        path.write_text(json.dumps(_as_old_code_wrote_it(json.loads(path.read_text())),
                                   indent=2, sort_keys=True))
    assert "mem_len" in json.loads(saved[0].read_text())["model"]
    last = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(workdir / "checkpoints" / str(last))
    before = load_run(workdir)
    assert before.step < last and before.cfg.model.xl.tgt_len == 16

    train(smoke_config(data_dir, "model.arch=xl"), workdir)
    after, reference = load_run(workdir), load_run(tiny_run)
    assert after.step == reference.step == last
    assert params_sha256(after.params) == params_sha256(reference.params)
