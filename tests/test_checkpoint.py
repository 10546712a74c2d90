"""Checkpoints round-trip bit for bit, are written atomically, and name their corruption."""

import numpy as np
import pytest

from minirlhf.lm import checkpoint
from minirlhf.lm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from minirlhf.lm.model import GPT, GPTConfig
from minirlhf.lm.tokenizer import CharTokenizer

CFG = GPTConfig(vocab_size=49, block_size=16, n_layer=1, n_head=2, n_embd=8)


def test_model_round_trip_bit_identical(tmp_path):
    model = GPT(CFG, scalar_heads=("value",))
    model.value_head.weight.data = np.random.default_rng(0).normal(size=(8, 1)).astype(np.float32)
    path = tmp_path / "m.npz"
    save_model(path, model, CharTokenizer(), extra={"stage": "test"})
    loaded, tok, extra = load_model(path)
    assert extra == {"stage": "test"} and tok.chars == CharTokenizer().chars
    assert loaded.config == model.config and loaded.scalar_heads == ("value_head",)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    assert (tmp_path / "m.json").exists()  # the human-readable sidecar


def test_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"w": np.arange(1000.0)}, {"note": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path} cannot be read as a checkpoint: it is a "
                       r"cut-off or damaged \.npz archive \(4,296 bytes\)"):
        load_checkpoint(path)


@pytest.mark.parametrize("content, said", [
    (b"", "an empty file"),
    (b"this is not a checkpoint\n", "a text file of 25 bytes (its first line: 'this is not a "
                                    "checkpoint')"),
    (b"\x93NUMPY\x01\x00v\x00", "a NumPy .npy array, not a .npz archive"),
    (b"\x00\xff\xfe garbage", "11 bytes that are not a .npz archive"),
])
def test_a_file_that_is_not_a_checkpoint_is_said_to_be_what_it_is(tmp_path, content, said):
    """What the file holds, not a guess at a cause (NumPy's own error on a text file speaks of
    allow_pickle)."""
    from minirlhf.files import read_meta

    path = tmp_path / "model.npz"
    path.write_bytes(content)
    for read in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError) as e:
            read(path)
        assert str(e.value) == f"checkpoint {path} cannot be read as a checkpoint: it is {said}"


def test_altered_checkpoint_fails_checksum(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"w": np.zeros(10)}, {})
    arrays, meta = load_checkpoint(path)
    arrays["w"][3] = 1.0  # someone edits the weights but keeps the old metadata
    meta_bytes = np.frombuffer(__import__("json").dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays, __meta__=meta_bytes)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"w": np.ones(5)}, {"version": 1})

    def crashing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint.np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": np.zeros(5)}, {"version": 2})
    monkeypatch.undo()
    arrays, meta = load_checkpoint(path)
    assert meta["version"] == 1 and np.all(arrays["w"] == 1)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_load_state_dict_errors_name_the_key():
    model = GPT(CFG)
    sd = model.state_dict()
    bad = dict(sd, **{"wte.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"wte.weight has shape \(3, 3\)"):
        model.load_state_dict(bad)
    missing = {k: v for k, v in sd.items() if k != "ln_f.bias"}
    with pytest.raises(KeyError, match="ln_f.bias"):
        model.load_state_dict(missing)


def test_non_finite_weights_are_never_saved_nor_loaded(tmp_path, monkeypatch):
    """A run that ends with weights of 1e38 * 10 (inf) or NaN must not leave a checkpoint that
    later stages load: saving refuses and keeps the old file; loading names the parameter."""
    from minirlhf.lm import checkpoint as ck

    path = tmp_path / "m.npz"
    ck.save_checkpoint(path, {"w": np.ones(3, np.float32)}, {"kind": "test"})
    before = path.read_bytes()
    with pytest.raises(FloatingPointError, match="parameter w holds 1 non-finite values"):
        ck.save_checkpoint(path, {"w": np.array([1.0, np.nan, 2.0], np.float32)}, {})
    assert path.read_bytes() == before
    monkeypatch.setattr(ck, "non_finite", lambda arrays: "")  # write one anyway, by force
    ck.save_checkpoint(path, {"w": np.array([np.inf, 0.0], np.float32)}, {})
    monkeypatch.undo()
    with pytest.raises(ck.CheckpointError, match="parameter w holds 1 non-finite values"):
        ck.load_checkpoint(path)


def test_blown_up_but_finite_weights_are_never_saved(tmp_path):
    """Weights of 1e28 are finite in float32, yet the next forward pass overflows: an absurd
    learning rate's result, refused like NaN (the largest trained weight here is about 1.5)."""
    from minirlhf.lm import checkpoint as ck

    path = tmp_path / "m.npz"
    with pytest.raises(FloatingPointError, match=r"parameter w holds 1 values beyond 1e\+06 "
                                                 r"\(largest 1e\+28\): the run blew up"):
        ck.save_checkpoint(path, {"w": np.array([1.0, 1e28, 2.0], np.float32)}, {})
    assert not path.exists()
    ck.save_checkpoint(path, {"w": np.array([1.0, -9.9e5], np.float32)}, {})  # big, but sane


def test_held_writes_move_every_file_into_place_together_or_none(tmp_path):
    from minirlhf.lm.checkpoint import atomic_write, held_writes

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old\n")
    with pytest.raises(FloatingPointError), held_writes():
        atomic_write(a, lambda f: f.write(b"new\n"))
        atomic_write(b, lambda f: f.write(b"new\n"))
        assert a.read_text() == "old\n" and not b.exists()  # held under temporary names
        raise FloatingPointError("the checkpoint was refused")
    assert a.read_text() == "old\n" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary file left
    with held_writes():
        atomic_write(a, lambda f: f.write(b"new\n"))
        with held_writes():  # a stage inside another block: its own files move when it ends
            atomic_write(b, lambda f: f.write(b"new\n"))
        assert a.read_text() == "old\n" and b.read_text() == "new\n"
    assert a.read_text() == b.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_every_stage_holds_its_writes():
    import inspect

    from minirlhf.registry import COMMANDS

    for stage in COMMANDS.values():  # each entry point is wrapped in held_writes()
        assert inspect.unwrap(stage.run) is not stage.run, stage.name


def test_the_one_json_reader_names_file_and_line(tmp_path, caplog):
    """Records, results, cached points and course records are read by ``read_json``: a bad one
    names the file and the line; ``read_cache`` makes that a warning and says what is done."""
    import logging

    from minirlhf.files import InputError, read_cache, read_json

    path = tmp_path / "point.json"
    path.write_text('{\n  "label": "DPO",\n  "gold": 1.')
    with pytest.raises(InputError, match=rf"^{path}:3: malformed JSON \(column 12: Expecting ',' "
                       r"delimiter\)$"):
        read_json(path)
    path.write_bytes(b'{\n\n  "label": "\xff"}')
    with pytest.raises(InputError, match=rf"^{path}:3: not UTF-8 text \(invalid start byte at "
                       "byte 15\\)$"):
        read_json(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(InputError, match=rf"^{path}:1: holds a JSON list, not an object$"):
        read_json(path)
    assert read_json(path, kind=list) == [1, 2]
    path.write_text('\ufeff{"label": "DPO"}', encoding="utf-8")  # saved by an editor
    with pytest.raises(InputError, match=rf"^{path}:1: starts with a byte-order mark \(U\+FEFF\); "
                       "save it as UTF-8 without one$"):
        read_json(path)
    path.write_text("")
    with pytest.raises(InputError, match=rf"^{path}:1: empty$"):
        read_json(path)
    log = logging.getLogger("minirlhf.test")
    with caplog.at_level("WARNING", logger="minirlhf.test"):
        assert read_cache(path, log, "training the point again") is None
        assert read_cache(tmp_path / "none.json", log, "x") is None  # not there: no word
    assert caplog.messages == [f"{path}:1: empty; training the point again"]
