"""The original Transformer-XL's outputs are reproduced (fixture + float64 NumPy reading)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longctx.compat import original_xl as txl
from longctx.errors import UserError
from tests import numpy_reference as npref
from tests.conftest import FIXTURES

FIXTURE = FIXTURES / "reference_postln.npz"


def test_fixture_reproduced_by_the_compat_command(tmp_path):
    out = tmp_path / "ours.npz"
    assert txl.main([str(FIXTURE), "--out", str(out)]) == 0
    ref = dict(np.load(FIXTURE))
    with np.load(out) as z:
        ours = {k: z[k] for k in z.files}
    n_seg = json.loads(bytes(ref["config_json"]))["n_segments"]
    cfg = json.loads(bytes(ref["config_json"]))
    for s in range(n_seg):
        keys = [f"seg{s}/logits", f"seg{s}/nll"] + [
            f"seg{s}/mems_out/{i}" for i in range(cfg["n_layer"] + 1)
        ]
        for key in keys:
            assert ours[key].shape == ref[key].shape, key
            err = np.max(np.abs(ours[key] - ref[key])) / np.max(np.abs(ref[key]))
            assert err < 1e-5, (key, err)


def test_numpy_reference_matches_the_fixture():
    ref = dict(np.load(FIXTURE))
    cfg = json.loads(bytes(ref["config_json"]))
    params = {k[len("param/"):]: v for k, v in ref.items() if k.startswith("param/")}
    outs = npref.run(cfg, params, ref["stream"])
    for key, got in outs.items():
        err = np.max(np.abs(got - ref[key])) / np.max(np.abs(ref[key]))
        assert err < 1e-5, (key, err)


OPTIONS = {
    "pre_lnorm_clamp": dict(pre_lnorm=True, clamp_len=3, mem_len=6, tgt_len=4),
    "mem_gt_2tgt": dict(mem_len=9, tgt_len=4, n_segments=4, clamp_len=5),
    "mem_lt_tgt_same_length": dict(mem_len=3, tgt_len=5, same_length=True),
    "same_length_long_mem_pre": dict(mem_len=7, tgt_len=3, same_length=True, pre_lnorm=True,
                                     n_segments=4, n_layer=3, n_head=3, d_head=4),
    "no_memory": dict(mem_len=0, tgt_len=4),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_options_match_float64_numpy_reading(name, tmp_path):
    arrays = npref.random_reference(OPTIONS[name], seed=len(name))
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)
    ours, raw = txl.convert_and_run(path)
    errs = txl.relative_errors(ours, raw)
    assert len(errs) == len([k for k in raw if k.startswith("seg")]) > 0
    assert max(errs.values()) < 1e-5, errs


def test_untied_r_biases_are_loaded(tmp_path):
    arrays = npref.random_reference(dict(mem_len=5, tgt_len=3), seed=3, untie_r=True)
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)
    cfg, _ = txl.load_reference(path)
    assert cfg.untie_r
    ours, raw = txl.convert_and_run(path)
    assert max(txl.relative_errors(ours, raw).values()) < 1e-5


@pytest.mark.parametrize(
    "bad, word",
    [(dict(ext_len=2), "ext_len"), (dict(attn_type=1), "attn_type"), (dict(div_val=4), "div_val"),
     (dict(cutoffs=[10]), "cutoffs"), (dict(tie_weight=False), "tie_weight")],
)
def test_unsupported_settings_refused_with_one_line(bad, word, tmp_path, capsys):
    arrays = npref.random_reference({}, seed=1)
    cfg = json.loads(bytes(arrays["config_json"]))
    cfg.update(bad)
    arrays["config_json"] = np.frombuffer(json.dumps(cfg).encode(), np.uint8)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=word):
        txl.load_reference(path)
    assert txl.main([str(path), "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert word in err and "\n" not in err


def test_load_reference_gives_config_and_params():
    cfg, params = txl.load_reference(FIXTURE)
    assert (cfg.arch, cfg.n_layer, cfg.xl.mem_len, cfg.xl.tgt_len, cfg.n_token) == ("xl", 2, 8, 8, 50)
    assert params["layers_0"]["qkv_net"]["kernel"].shape == (16, 48)


def _with_config(arrays, text: bytes):
    return {**arrays, "config_json": np.frombuffer(text, np.uint8)}


def _bad_references():
    """(name, arrays, words the one line holds) of reference files import-txl refuses."""
    good = npref.random_reference({}, seed=2)
    cfg = json.loads(bytes(good["config_json"]))
    return [
        ("wrong shape", {**good, "param/layers.1.pos_ff.CoreNet.0.weight":
                         np.zeros((33, 16), np.float32)},
         "weight 'param/layers.1.pos_ff.CoreNet.0.weight' has shape (33, 16), config_json "
         "implies (32, 16)"),
        ("n_layer -1", _with_config(good, json.dumps({**cfg, "n_layer": -1}).encode()),
         "config_json: config key 'model.n_layer': must be >= 1"),
        ("n_head text", _with_config(good, json.dumps({**cfg, "n_head": "2"}).encode()),
         "config_json 'n_head' is '2', not an integer"),
        ("not JSON", _with_config(good, b'{"n_layer": 2,'), "config_json is not JSON text"),
        ("not UTF-8", _with_config(good, b"\xff\xfe"), "config_json is not JSON text"),
        ("a list", _with_config(good, b"[2, 2]"), "config_json is a JSON list"),
        ("no d_inner", _with_config(good, json.dumps(
            {k: v for k, v in cfg.items() if k != "d_inner"}).encode()),
         "config_json lacks the key 'd_inner'"),
        ("NaN weight", {**good, "param/r_w_bias": np.full((2, 8), np.nan, np.float32)},
         "weight 'param/r_w_bias' holds values that are not finite"),
        ("text weight", {**good, "param/r_r_bias": np.array(["a"] * 16).reshape(2, 8)},
         "weight 'param/r_r_bias' is not numeric"),
    ]


def test_import_txl_refuses_bad_weights_and_config_before_writing(tmp_path, capfd):
    from longctx.cli import main

    for name, arrays, words in _bad_references():
        path = tmp_path / f"{name.replace(' ', '_')}.npz"
        np.savez(path, **arrays)
        workdir = tmp_path / f"run_{path.stem}"
        capfd.readouterr()
        assert main(["import-txl", str(path), "--workdir", str(workdir)]) == 2, name
        lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"{path}: {words}" in lines[0], (name, lines)
        assert not workdir.exists(), name


def test_import_txl_checks_the_tokenizer_before_writing(tiny_run, tmp_path, capfd):
    import shutil

    from longctx.cli import main

    # the fixture's 50 tokens: the smoke run's 512-token tokenizer does not fit its weights
    cases = {"too big": (shutil.copytree(tiny_run / "tokenizer", tmp_path / "big"),
                         "512 tokens, more than the 50 the weights have")}
    damaged = shutil.copytree(tiny_run / "tokenizer", tmp_path / "damaged")
    (damaged / "tokenizer.json").write_bytes((damaged / "tokenizer.json").read_bytes()[:200])
    cases["damaged"] = (damaged, f"{damaged / 'tokenizer.json'}: unreadable tokenizer")
    for name, (folder, words) in cases.items():
        workdir = tmp_path / f"run_{folder.name}"
        capfd.readouterr()
        assert main(["import-txl", str(FIXTURE), "--workdir", str(workdir), "--tokenizer",
                     str(folder)]) == 2, name
        lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and words in lines[0], (name, lines)
        assert not workdir.exists()
