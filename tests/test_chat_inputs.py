"""Chat's inputs are checked at the boundary: every flag's range, input lines that are not
UTF-8, and saved states (confined to chats/NAME/, token ids in the vocabulary, a damaged
or pickled .npz refused even when meta.json's digest matches it). Each refusal is one
line; the current conversation and every file stay as they were."""

import hashlib
import io
import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from longctx.cli import main
from longctx.config import ModelConfig
from longctx.errors import UserError
from longctx.generate import state as saved
from longctx.generate.sampler import SamplerSettings, check_seed
from longctx.generate.state import Conversation, Turn
from longctx.models import xl_decode_init
from tests.conftest import REPO, subprocess_env

CFG = ModelConfig(arch="xl", n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8).replace(
    xl=dict(tgt_len=4, mem_len=8), window=dict(window=8))
META = {"model": CFG.to_dict()}


@pytest.mark.parametrize("settings,flag", [
    (dict(temperature=float("nan")), "--temperature"),
    (dict(temperature=float("inf")), "--temperature"),
    (dict(temperature=-0.5), "--temperature"),
    (dict(top_k=2**31), "--top-k"),
    (dict(top_p=float("nan")), "--top-p"),
    (dict(max_new_tokens=2**40), "--max-new-tokens"),
])
def test_sampler_flags_out_of_range_are_refused(settings, flag):
    with pytest.raises(UserError, match=f"^{flag}: must be"):
        SamplerSettings(**settings)


def test_seeds_are_those_the_prng_tells_apart():
    assert check_seed(0) == 0 and check_seed(2**32 - 1) == 2**32 - 1
    for seed in (-1, 2**32, 10**30):
        with pytest.raises(UserError, match=r"^--seed: must be in 0\.\.4294967295"):
            check_seed(seed)


@pytest.mark.parametrize("flags,words", [
    (["--temperature", "nan"], "--temperature: must be a finite number >= 0"),
    (["--seed", str(10**30)], "--seed: must be in 0..4294967295"),
    (["--step", "-3"], "--step: must be >= 0"),
])
def test_chat_flags_are_one_line_before_the_run_is_read(tmp_path, capfd, flags, words):
    capfd.readouterr()
    assert main(["chat", "--workdir", str(tmp_path / "no-run"), *flags]) == 2
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], lines


def _save(tmp_path, tokens=(1, 4, 13, 49)):
    decode = xl_decode_init(CFG, 1)
    conv = Conversation(decode=decode, tokens=list(tokens), turns=[Turn("user", "hi")],
                        rng=np.asarray([7, 9], np.uint32))
    folder = saved.save(conv, tmp_path, "a", META)
    return folder, decode


def _replace_state(folder, data: bytes) -> None:
    """Put `data` in as the saved state, with meta.json's name and digest made to match."""
    meta = json.loads((folder / "meta.json").read_text())
    (folder / meta["state_file"]).unlink()
    digest = hashlib.sha256(data).hexdigest()
    meta["state_file"], meta["state_sha256"] = f"state-{digest[:16]}.npz", digest
    (folder / meta["state_file"]).write_bytes(data)
    (folder / "meta.json").write_text(json.dumps(meta))


def _refused(tmp_path, template, *words):
    with pytest.raises(UserError) as err:
        saved.load(tmp_path, "a", template, META, CFG.n_token)
    msg = str(err.value)
    assert "\n" not in msg and "unchanged" in msg and all(w in msg for w in words), msg


def test_a_truncated_state_whose_digest_matches_is_refused(tmp_path):
    folder, template = _save(tmp_path)
    data = next(folder.glob("state-*.npz")).read_bytes()
    _replace_state(folder, data[: len(data) // 2])
    _refused(tmp_path, template, "unreadable saved state", "BadZipFile")


def test_a_member_that_is_a_bare_pickle_is_refused(tmp_path):
    folder, template = _save(tmp_path)
    with np.load(next(folder.glob("state-*.npz"))) as npz:
        arrays = {k: npz[k] for k in npz.files}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.save(member, value)
            z.writestr(f"{key}.npy", member.getvalue() if key != "tokens"
                       else pickle.dumps(value.tolist()))
    _replace_state(folder, buf.getvalue())
    _refused(tmp_path, template, "member 'tokens' is not a plain .npy array")


def test_state_file_in_meta_is_never_followed_outside_the_save(tmp_path):
    folder, template = _save(tmp_path)
    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes(next(folder.glob("state-*.npz")).read_bytes())
    meta = json.loads((folder / "meta.json").read_text())
    next(folder.glob("state-*.npz")).unlink()
    meta["state_file"] = "../../elsewhere.npz"  # a valid state, with the right digest
    (folder / "meta.json").write_text(json.dumps(meta))
    _refused(tmp_path, template, "missing", str(folder / f"state-{meta['state_sha256'][:16]}"))
    meta["state_sha256"] = "../../elsewhere"
    (folder / "meta.json").write_text(json.dumps(meta))
    _refused(tmp_path, template, "is not a SHA-256")


def test_token_ids_outside_the_vocabulary_are_refused(tmp_path):
    _, template = _save(tmp_path, tokens=(1, 4, 50, 3))
    _refused(tmp_path, template, "token id 50 is outside this model's vocabulary (0..49)")
    _, template = _save(tmp_path, tokens=(1, -2))
    _refused(tmp_path, template, "token id -2 is outside")


def test_an_input_line_that_is_not_utf8_is_read_with_replacement(tiny_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "longctx.cli", "chat", "--workdir", str(tiny_run),
         "--max-new-tokens", "4", "--temperature", "0"], cwd=REPO, env=subprocess_env(),
        input=b"my name is \xff\xfeAda\n/stats\n", capture_output=True, timeout=120)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "you> my name is \ufffd\ufffdAda" in out and "[xl: " in out


def test_a_save_folder_linked_outside_chats_is_neither_read_nor_written(tmp_path):
    folder, template = _save(tmp_path)
    outside = tmp_path / "outside"
    folder.rename(outside)
    folder.symlink_to(outside, target_is_directory=True)
    _refused(tmp_path, template, "links outside", "remove the link")
    with pytest.raises(UserError, match="links outside"):
        saved.save(Conversation(decode=template), tmp_path, "a", META)
    assert sorted(p.name for p in outside.iterdir())[0] == "meta.json"
