"""A damaged run file is named where it is read: config.json, the tokenizer, metrics.jsonl
and each checkpoint item. What orbax can restore is restored, a step whose saved step
number disagrees with its folder is treated as damaged, and nothing saved is lost."""

import json
import shutil

import pytest

from longctx.cli import main
from longctx.errors import UserError
from longctx.rundir import load_run
from longctx.rundir.layout import read_config
from longctx.train import resume
from longctx.train.loop import train
from longctx.train.metrics import truncate_jsonl
from tests.conftest import smoke_config


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the shared trained smoke run (checkpoints 4, 8, 12)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def _smoke(data_dir):
    return smoke_config(data_dir, "model.arch=xl")  # as `tiny_run` was trained


def _sha(workdir):
    return json.loads((workdir / "summary.json").read_text())["params_sha256"]


def _one_error_line(capfd, argv):
    """Run `longctx ARGV` in this process: (exit code, its one stderr line)."""
    capfd.readouterr()
    code = main(argv)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return code, lines[0]


def test_a_metrics_tail_that_is_not_utf8_is_dropped_like_a_cut_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0}).encode() for s in (2, 4, 6)]
    path.write_bytes(b"\n".join([*rows, b"[1, 2]", b'{"step": "x"}', b'{"step": 8, "loss": \xff\xfe'])
                     + b"\n")
    truncate_jsonl(path, 4)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [2, 4]


def test_resume_repairs_a_metrics_log_with_invalid_utf8(run_copy, data_dir, tiny_run):
    shutil.rmtree(run_copy / "checkpoints" / "12")
    with (run_copy / "metrics.jsonl").open("ab") as fh:
        fh.write(b'{"step": 13, "loss": \xff\xfe\x80')  # a row cut mid-write, bytes not UTF-8
    summary = train(_smoke(data_dir), run_copy)
    assert summary["params_sha256"] == _sha(tiny_run)
    steps = [json.loads(x)["step"] for x in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_a_step_folder_copied_under_a_higher_number_is_damaged(run_copy, data_dir, tiny_run,
                                                                caplog):
    ckpt = run_copy / "checkpoints"
    shutil.rmtree(ckpt / "12")
    shutil.copytree(ckpt / "4", ckpt / "12")  # step 4's files under the name 12
    assert load_run(run_copy).step == 8  # info, evaluate and chat skip it
    assert "state/step holds step 4, not 12" in caplog.text
    assert train(_smoke(data_dir), run_copy)["params_sha256"] == _sha(tiny_run)
    assert (run_copy / resume.ASIDE / "12" / "state").is_dir()  # set aside, not lost
    assert train(_smoke(data_dir), run_copy)["step"] == 12  # and a rerun is clean


def test_a_step_without_checkpoint_metadata_is_restored_not_set_aside(run_copy, data_dir,
                                                                     tiny_run):
    (run_copy / "checkpoints" / "12" / "_CHECKPOINT_METADATA").unlink()
    assert load_run(run_copy).step == 12
    assert train(_smoke(data_dir), run_copy)["params_sha256"] == _sha(tiny_run)
    assert (run_copy / "checkpoints" / "12" / "params").is_dir()
    assert not (run_copy / resume.ASIDE).exists()


@pytest.mark.parametrize("name,damage", [
    ("tokenizer.json", lambda p: p.write_bytes(p.read_bytes()[:100])),
    ("tokenizer_config.json", lambda p: p.write_bytes(b"\xff\xfe")),
])
def test_a_damaged_tokenizer_is_named_not_the_checkpoints(run_copy, capfd, name, damage):
    damage(run_copy / "tokenizer" / name)
    code, line = _one_error_line(capfd, ["info", "--workdir", str(run_copy)])
    assert code == 2 and f"tokenizer/{name}: unreadable tokenizer" in line
    assert "checkpoint" not in line
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["12", "4", "8"]


@pytest.mark.parametrize("content,problem", [
    (b"\xff\xfe{}", "can't decode byte 0xff"),
    (b"[1, 2]", "a JSON list, not an object of sections"),
    (b"[" * 100_000 + b"]" * 100_000, "recursion"),
    (b'{"model": 5}', "config key 'model': expected a mapping"),
    (b'{"model": {"n_layer": -1}}', "config key 'model.n_layer': must be >= 1"),
    (b'{"optim": {"learning_rate": NaN}}', "config key 'optim.learning_rate': must be a finite"),
    (b'{"model": {"n_layer": 1' + b"0" * 5000 + b"}}", "integer string conversion"),
])
def test_a_damaged_config_json_is_one_line_naming_it(tmp_path, content, problem):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(UserError) as err:
        read_config(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'config.json'}: unreadable config")
    assert problem in msg


def test_a_damaged_data_item_is_named_and_set_aside(run_copy, data_dir, tiny_run, caplog):
    (run_copy / "checkpoints" / "12" / "data" / "metadata").write_text('{"lanes": 5}')
    assert train(_smoke(data_dir), run_copy)["params_sha256"] == _sha(tiny_run)
    assert "data/metadata: not the data iterators' state" in caplog.text
    assert (run_copy / resume.ASIDE / "12" / "data").is_dir()


def test_a_damaged_summary_is_named_and_never_reads_as_done(run_copy, caplog):
    from longctx.eval.evaluate import _summary
    from longctx.train.sweep import is_done

    assert is_done(run_copy) and _summary(run_copy)["done"] is True
    for text in (b"\xff\xfe", b'["done"]', b'{"done": "no"}', b'{"done": tr'):
        (run_copy / "summary.json").write_bytes(text)
        assert not is_done(run_copy)
    for text in (b"\xff\xfe", b'["done"]'):
        (run_copy / "summary.json").write_bytes(text)
        assert _summary(run_copy) == {}
        assert f"{run_copy / 'summary.json'}: unreadable" in caplog.text


def test_a_damaged_dataset_manifest_is_one_line(data_dir, tmp_path):
    from longctx.data.dataset import MANIFEST, dataset_dir, prepare_dataset

    cfg = _smoke(data_dir).data
    copy = shutil.copytree(dataset_dir(cfg), tmp_path / dataset_dir(cfg).name)
    (copy / MANIFEST).write_bytes(b'{"splits": \xff')
    cfg.data_dir = str(tmp_path)
    with pytest.raises(UserError) as err:
        prepare_dataset(cfg)
    assert str(err.value).startswith(f"{copy / MANIFEST}: unreadable dataset manifest")
    assert "longctx data build" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content,problem", [
    ("[1]", "config/metadata: a JSON list, not a config"),
    ('{"model": 5}', "config: config key 'model': expected a mapping"),
    ('{"model": {"n_layer": 2,', "config/metadata: Expecting"),
])
def test_a_damaged_config_item_is_named_and_skipped(run_copy, caplog, content, problem):
    (run_copy / "checkpoints" / "12" / "config" / "metadata").write_text(content)
    assert load_run(run_copy).step == 8
    assert f"checkpoint step 12 of {run_copy} is unreadable ({problem}" in caplog.text
