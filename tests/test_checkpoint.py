"""Checkpoints resume or refuse (issue 14, class 2): atomic generations of files, a manifest with
SHA-256 digests checked before anything is loaded, the loaded weights checked against the files,
a lock against a second writer, and a real ``kill -9`` in the middle of a write."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.io import load_model, save_model
from sk_htlnet.net import HybridNet

from _sizes import SMALL_NET

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(SMALL_NET, max_iter=2, random_state=0, n_threads=1)
DATA = dict(n_samples=400, n_stages=2, n_categorical=2, n_numeric=3, stage_rates=0.5, random_state=0)
REMEDY = "Remove the folder or pass another checkpoint_dir"
needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(**DATA)


@pytest.fixture(scope="module")
def written(funnel, tmp_path_factory):
    """A checkpoint folder of FAST after 2 epochs (copy it before changing it)."""
    folder = tmp_path_factory.mktemp("written") / "ckpt"
    HTLNetRegressor(**FAST, checkpoint_dir=folder).fit(*funnel)
    return folder


@pytest.fixture
def folder(written, tmp_path):
    return Path(shutil.copytree(written, tmp_path / "ckpt"))


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _file_of(folder, artefact):
    """The file of an artefact in the folder (``params-000002.pt``; ``params.pt`` in the layout
    without a manifest)."""
    (path,) = [p for p in folder.iterdir() if p.name.startswith((f"{artefact}-", f"{artefact}."))]
    return path


def _refused(folder, match):
    return pytest.raises(ValueError, match=rf"checkpoint_dir='{re.escape(str(folder))}' .*{match}")


class _Crash(Callback):
    """Raise SystemExit when the epoch after ``after`` begins (skorch catches only Ctrl-C)."""

    def __init__(self, after):
        self.after = after

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == self.after + 1:  # the net has just opened the next epoch's row
            raise SystemExit("simulated crash")


class _Weights(Callback):
    """Copies of the module's state when training begins (after a resume) and after each epoch."""

    def __init__(self):
        self.at_start = None
        self.after_epoch = []

    def _copy(self, net):
        return {k: v.detach().cpu().clone() for k, v in net.module_.state_dict().items()}

    def on_train_begin(self, net, **kwargs):
        self.at_start = self._copy(net)

    def on_epoch_end(self, net, **kwargs):
        self.after_epoch.append(self._copy(net))


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _steps(est):
    """Adam's step count, from the dense optimiser's state."""
    return {int(s["step"]) for s in est.net_.optimizer_.state_dict()["state"].values()}


# ---- the happy path ---------------------------------------------------------------------------------
def test_a_crashed_fit_resumes_and_runs_the_remaining_epochs(funnel, tmp_path, recwarn):
    X, Y = funnel
    folder = tmp_path / "ckpt"
    kw = {**FAST, "max_iter": 6}
    crashed, weights = _Weights(), _Weights()
    with pytest.raises(SystemExit):
        HTLNetRegressor(**kw, checkpoint_dir=folder, callbacks=[crashed, _Crash(3)]).fit(X, Y)
    generation = ["embedding_optimizer-000003.pt", "history-000003.json", "optimizer-000003.pt",
                  "params-000003.pt"]
    assert sorted(os.listdir(folder)) == sorted(generation + ["checkpoint.lock", "manifest.json"])
    manifest = _manifest(folder)
    assert manifest["epochs"] == 3
    assert sorted(entry["file"] for entry in manifest["artefacts"].values()) == generation
    resumed = HTLNetRegressor(**kw, checkpoint_dir=folder, callbacks=[weights]).fit(X, Y)
    assert _equal(weights.at_start, crashed.after_epoch[2]) and len(weights.after_epoch) == 3  # epochs 4 to 6
    steps_per_epoch = -(-len(X) // FAST["batch_size"])  # no validation split below 10,000 rows
    state = resumed.net_.embedding_optimizer_.state_dict()["state"]
    assert [int(s["step"]) for s in state.values()] == [6 * steps_per_epoch]  # restored after 3, then 3 more
    assert _steps(resumed) == {6 * steps_per_epoch}
    assert resumed.n_iter_ == 6 and list(resumed.history_[:, "epoch"]) == [1, 2, 3, 4, 5, 6]
    assert sorted(os.listdir(folder)) == sorted(
        [name.replace("000003", "000006") for name in generation] + ["checkpoint.lock", "manifest.json"])
    assert not [w for w in recwarn if "checkpoint" in str(w.message)]  # resume or refuse: no warnings


# ---- missing, damaged and foreign files ---------------------------------------------------------------
@pytest.mark.parametrize("artefact", ["params", "optimizer", "embedding_optimizer", "history"])
def test_a_checkpoint_missing_a_file_is_refused(funnel, folder, artefact):
    missing = _file_of(folder, artefact)
    missing.unlink()
    est = HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder)
    with _refused(folder, rf"lacks {missing.name}, which its manifest.json lists for epoch 2.*{REMEDY}"):
        est.fit(*funnel)
    assert not hasattr(est, "net_")


@pytest.mark.parametrize("artefact", ["params", "optimizer", "history"])
def test_a_flipped_byte_is_refused(funnel, folder, artefact):
    path = _file_of(folder, artefact)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    with _refused(folder, rf"holds {path.name}, which does not match its SHA-256 digest in manifest.json"):
        HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder).fit(*funnel)


def _set(key, value):
    def mutate(manifest):
        manifest[key] = value
        return json.dumps(manifest).encode()
    return mutate


def _set_file(artefact, field, value):
    def mutate(manifest):
        manifest["artefacts"][artefact][field] = value
        return json.dumps(manifest).encode()
    return mutate


@pytest.mark.parametrize("mutate, match", [
    (_set_file("params", "file", "../params-000002.pt"), "a file name '../params-000002.pt' for 'params' that is "
                                                         "not a plain name in the folder"),
    (_set_file("params", "file", "/etc/passwd"), "not a plain name in the folder"),
    (_set_file("optimizer", "sha256", "abc"), "an invalid SHA-256 digest 'abc' for 'optimizer'"),
    (_set("epochs", "2"), "an invalid epoch count '2'"),
    (_set("epochs", 5), "a history of 2 epochs, but its manifest.json says 5"),
    (_set("format", "other"), "of format 'other' version 1"),
    (_set("artefacts", {}), r"no entry for \['params', 'optimizer', 'history'\]"),
    (lambda m: json.dumps(m).encode()[:100], "a manifest.json that is not a valid manifest .*damaged"),
    (lambda m: b"[" * 100_000 + b"]" * 100_000, "not a valid manifest"),
    (lambda m: b" " * (17 * 2**20) + json.dumps(m).encode(), "a manifest.json larger than 16 MiB"),
], ids=["parent-folder", "absolute-path", "bad-digest", "epochs-as-text", "wrong-epochs", "other-format",
        "no-files", "truncated", "deeply-nested", "oversized"])
def test_the_manifest_is_checked_as_untrusted_input(funnel, folder, mutate, match):
    path = folder / "manifest.json"
    path.write_bytes(mutate(json.loads(path.read_text())))
    with _refused(folder, match):
        HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder).fit(*funnel)


def test_the_loaded_weights_are_checked_against_the_files(funnel, folder, monkeypatch):
    """A loader that skips the weights (as skorch skips a missing file) is caught."""
    def skip_weights(self, **kwargs):
        kwargs.pop("f_params", None)
        return NeuralNet.load_params(self, **kwargs)

    monkeypatch.setattr(HybridNet, "load_params", skip_weights)
    with _refused(folder, r"holds params-000002.pt, but the state loaded into the net's module_ differs from "
                          "it: the checkpoint did not resume"):
        HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder).fit(*funnel)


def test_a_folder_of_the_earlier_layout_is_refused(funnel, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "params.pt").write_bytes(b"written by an earlier sk_htlnet")
    with _refused(folder, r"holds \['params.pt'\] without a manifest.json.*cannot be verified"):
        HTLNetRegressor(**FAST, checkpoint_dir=folder).fit(*funnel)


# ---- another model ------------------------------------------------------------------------------------
def test_a_checkpoint_of_another_model_is_refused_clearly(funnel, folder, tmp_path):
    X, Y = funnel
    with _refused(folder, r"holds a checkpoint of another model or other data: its settings differ in "
                          r"params.embedding_dim \(checkpoint 4, this fit 8\)\. A checkpoint resumes.*" + REMEDY):
        HTLNetRegressor(**{**FAST, "embedding_dim": 8}, checkpoint_dir=folder).fit(X, Y)
    with _refused(folder, "holds a checkpoint of another model or other data: the training data differ "
                          r"\(.*; rows: checkpoint 400, this fit 300\)\. A checkpoint resumes"):
        HTLNetRegressor(**FAST, checkpoint_dir=folder).fit(X.iloc[:300], Y.iloc[:300])  # same schema
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="checkpoint_dir=.*a_file' exists and is not a folder"):
        HTLNetRegressor(**FAST, checkpoint_dir=tmp_path / "a_file").fit(X, Y)


def test_a_checkpoint_of_the_other_sparse_updates_is_refused(funnel, folder, tmp_path):
    X, Y = funnel
    with _refused(folder, r"holds a checkpoint written with sparse_updates=True .*this fit has "
                          r"sparse_updates=False\. Fit with sparse_updates=True to resume it"):
        HTLNetRegressor(**FAST, checkpoint_dir=folder, sparse_updates=False).fit(X, Y)
    dense = tmp_path / "dense"
    HTLNetRegressor(**FAST, checkpoint_dir=dense, sparse_updates=False).fit(X, Y)
    with _refused(dense, r"holds a checkpoint written with sparse_updates=False \(it has no state of the "
                         r"embedding tables' SparseAdam optimiser\), but this fit has sparse_updates=True"):
        HTLNetRegressor(**{**FAST, "max_iter": 3}, checkpoint_dir=dense).fit(X, Y)
    weights = _Weights()
    est = HTLNetRegressor(**{**FAST, "max_iter": 3}, checkpoint_dir=dense, sparse_updates=False,
                          callbacks=[weights]).fit(X, Y)
    assert est.n_iter_ == 3 and len(weights.after_epoch) == 1  # resumed with the settings it was written with


def test_a_resumed_checkpoint_takes_the_current_learning_rate(funnel, tmp_path):
    X, Y = funnel
    HTLNetRegressor(**FAST, checkpoint_dir=tmp_path / "ck", learning_rate=1e-3).fit(X, Y)
    weights = _Weights()
    est = HTLNetRegressor(**{**FAST, "max_iter": 3}, checkpoint_dir=tmp_path / "ck", learning_rate=0.02,
                          weight_decay=1e-4, callbacks=[weights]).fit(X, Y)
    assert est.n_iter_ == 3 and len(weights.after_epoch) == 1  # resumed after the 2 saved epochs
    assert {g["lr"] for g in est.net_.optimizer_.param_groups + est.net_.embedding_optimizer_.param_groups} == {0.02}
    assert {g["weight_decay"] for g in est.net_.optimizer_.param_groups} == {1e-4}


def test_a_loaded_model_continues_from_its_own_weights(funnel, tmp_path):
    """Not from a newer checkpoint in its checkpoint_dir; n_iter_ counts on from the saved epochs."""
    X, Y = funnel
    est = HTLNetRegressor(**FAST, checkpoint_dir=tmp_path / "ck").fit(X, Y)
    with pytest.warns(UserWarning, match=r"did not store \['checkpoint_dir'\]"):  # a path is not data
        save_model(est, tmp_path / "m.htlnet")
    est.set_params(warm_start=True, max_iter=3).fit(X, Y)  # the folder moves on to 5 epochs
    loaded = load_model(tmp_path / "m.htlnet")
    assert loaded.n_iter_ == 2 and loaded.checkpoint_dir is None
    loaded.partial_fit(X, Y)
    assert loaded.n_iter_ == 3 and len(loaded.history_) == 1


def test_a_failed_write_stops_the_fit_and_keeps_the_last_complete_epoch(funnel, tmp_path, monkeypatch):
    X, Y = funnel
    folder = tmp_path / "ckpt"
    real_replace = os.replace

    def disk_full(src, dst):
        if "000002" in os.path.basename(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full)
    failed = rf"checkpoint_dir='{re.escape(str(folder))}': writing the checkpoint of epoch 2 failed"
    with pytest.raises(OSError, match=failed):
        HTLNetRegressor(**FAST, checkpoint_dir=folder).fit(X, Y)
    monkeypatch.undo()
    assert _manifest(folder)["epochs"] == 1 and not list(folder.glob("*.tmp")) + list(folder.glob(".*.tmp"))
    weights = _Weights()
    assert HTLNetRegressor(**FAST, checkpoint_dir=folder, callbacks=[weights]).fit(X, Y).n_iter_ == 2
    assert len(weights.after_epoch) == 1  # resumed from epoch 1, the last complete checkpoint


# ---- kill -9 and a second writer ------------------------------------------------------------------------
_KILLED_CHILD = r"""
import io, json, os, signal, sys
import torch
from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel

folder, mode, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
params, data = json.loads(sys.argv[4]), json.loads(sys.argv[5])
calls = []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

real_save, real_replace, real_remove = torch.save, os.replace, os.remove

def save(obj, f, *args, **kwargs):  # the nth write of the weights: half of the file, then SIGKILL
    if mode == "params" and isinstance(f, (str, os.PathLike)) and "params" in os.path.basename(f):
        calls.append(f)
        if len(calls) == nth:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                out.flush()
                os.fsync(out.fileno())
            die()
    return real_save(obj, f, *args, **kwargs)

def replace(src, dst):  # the nth manifest: written in part, then SIGKILL before it is renamed
    if mode == "manifest" and os.path.basename(dst) == "manifest.json":
        calls.append(dst)
        if len(calls) == nth:
            os.truncate(src, os.path.getsize(src) // 2)
            die()
    return real_replace(src, dst)

def remove(path):  # after the nth manifest, SIGKILL before the previous epoch's files are deleted
    if mode == "cleanup" and f"-{nth - 1:06d}." in os.path.basename(path):
        die()
    return real_remove(path)

torch.save, os.replace, os.remove = save, replace, remove
X, Y = make_funnel(**data)
HTLNetRegressor(**params, checkpoint_dir=folder).fit(X, Y)
"""


@pytest.fixture(scope="module")
def reference(funnel):
    """The weights of an uninterrupted fit of FAST at the start and after each of 3 epochs."""
    weights = _Weights()
    HTLNetRegressor(**{**FAST, "max_iter": 3}, callbacks=[weights]).fit(*funnel)
    return [weights.at_start] + weights.after_epoch


@needs_sigkill
@pytest.mark.parametrize("mode, nth, last_complete", [
    ("params", 3, 2),    # killed writing epoch 3's weights: a half-written file is left
    ("manifest", 3, 2),  # killed writing epoch 3's manifest
    ("cleanup", 3, 3),   # killed after epoch 3's manifest, before epoch 2's files were deleted
    ("params", 1, 0),    # killed writing the first epoch: nothing complete, a fresh start
])
def test_sigkill_while_writing_resumes_from_the_last_complete_epoch(funnel, reference, tmp_path, mode, nth,
                                                                    last_complete):
    folder = tmp_path / "ckpt"
    params = {**FAST, "max_iter": 4}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(folder), mode, str(nth), json.dumps(params), json.dumps(DATA)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    weights = _Weights()
    resumed = HTLNetRegressor(**params, checkpoint_dir=folder, callbacks=[weights]).fit(*funnel)
    assert _equal(weights.at_start, reference[last_complete])  # the last complete epoch's weights, bit for bit
    assert len(weights.after_epoch) == 4 - last_complete  # then the remaining epochs
    assert resumed.n_iter_ == 4 and list(resumed.history_[:, "epoch"]) == [1, 2, 3, 4]
    steps_per_epoch = -(-len(funnel[0]) // FAST["batch_size"])
    assert _steps(resumed) == {4 * steps_per_epoch}  # the optimiser state resumed too
    assert sorted(p.name for p in folder.iterdir()) == [  # the half-written and stale files are gone
        "checkpoint.lock", "embedding_optimizer-000004.pt", "history-000004.json", "manifest.json",
        "optimizer-000004.pt", "params-000004.pt"]


_LOCK_HOLDER = r"""
import sys, time
from sk_htlnet.checkpoint import checkpoint_lock
with checkpoint_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@needs_sigkill
def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(funnel, folder):
    from sk_htlnet.checkpoint import checkpoint_lock

    X, Y = funnel
    params = {**FAST, "max_iter": 3}
    in_use = rf"is in use by another fit \(lock '{re.escape(str(folder / 'checkpoint.lock'))}'\)"
    with checkpoint_lock(folder):  # a second holder in this process
        with _refused(folder, in_use):
            HTLNetRegressor(**params, checkpoint_dir=folder).fit(X, Y)
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(folder)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with _refused(folder, in_use):  # another process holds it
            HTLNetRegressor(**params, checkpoint_dir=folder).fit(X, Y)
        assert _manifest(folder)["epochs"] == 2  # the refused fit wrote nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL and (folder / "checkpoint.lock").exists()
    weights = _Weights()
    est = HTLNetRegressor(**params, checkpoint_dir=folder, callbacks=[weights]).fit(X, Y)  # the OS released
    assert est.n_iter_ == 3 and len(weights.after_epoch) == 1  # the dead holder's lock, and it resumed


# ---- the fingerprint covers the parameters and the data (attacker's B1) --------------------------------
@pytest.mark.parametrize("change, shown", [
    (dict(gradient_adjustment="none"), "params.gradient_adjustment (checkpoint 'htlnet', this fit 'none')"),
    (dict(gradient_adjustment="pcgrad"), "params.gradient_adjustment (checkpoint 'htlnet', this fit 'pcgrad')"),
    (dict(relax_factor=0.9), "params.relax_factor (checkpoint 'auto', this fit 0.9)"),
    (dict(batch_size=64), "params.batch_size (checkpoint 256, this fit 64)"),
    (dict(random_state=5), "params.random_state (checkpoint 0, this fit 5)"),
    (dict(retransformation="none"), "params.retransformation (checkpoint 'isotonic', this fit 'none')"),
    (dict(early_stopping=True), "params.early_stopping (checkpoint 'auto', this fit True)"),
], ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else None)
def test_a_checkpoint_of_other_parameters_is_refused(funnel, folder, change, shown):
    with _refused(folder, "holds a checkpoint of another model or other data: its settings differ in "
                          + re.escape(shown) + r".*the same data and parameters.*" + REMEDY):
        HTLNetRegressor(**{**FAST, "max_iter": 4, **change}, checkpoint_dir=folder).fit(*funnel)
    assert _manifest(folder)["epochs"] == 2  # nothing was overwritten


def _rename_categories(X, Y):
    return X.assign(cat_0=X.cat_0.cat.rename_categories(lambda c: f"z{c}")), Y


def _shuffle_a_category(X, Y):
    return X.assign(cat_1=X.cat_1.sample(frac=1.0, random_state=1).to_numpy()), Y


def _rename_a_column(X, Y):
    return X.rename(columns={"num_2": "num_x"}), Y


def _scale_a_numeric_column(X, Y):  # the standardised values are the same: the encoder's scale differs
    return X.assign(num_0=X.num_0 * 2.0), Y


def _scale_the_core(X, Y):  # the standardised core target is the same: its raw values differ
    return X, Y.assign(core=Y.core * 3.0)


@pytest.mark.parametrize("alter", [_rename_categories, _shuffle_a_category, _rename_a_column,
                                   _scale_a_numeric_column, _scale_the_core])
def test_a_checkpoint_of_other_data_of_the_same_shapes_is_refused(funnel, folder, alter):
    X, Y = alter(*funnel)
    assert X.shape == funnel[0].shape and Y.shape == funnel[1].shape
    with _refused(folder, r"holds a checkpoint of another model or other data: .*the training data differ "
                          r"\(SHA-256 of the encoded data, vocabularies and column labels: checkpoint [0-9a-f]{12}"
                          r"\.\.\., this fit [0-9a-f]{12}\.\.\.\).*" + REMEDY):
        HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder).fit(X, Y)


def test_the_same_data_and_parameters_resume(funnel, folder):
    """A copy of the data (another object, equal values) and the parameters a resumed fit may change."""
    X, Y = (frame.copy(deep=True) for frame in funnel)
    weights = _Weights()
    est = HTLNetRegressor(**{**FAST, "max_iter": 3, "n_threads": 2, "verbose": 0, "learning_rate": 5e-4,
                             "weight_decay": 1e-5}, checkpoint_dir=str(folder), callbacks=[weights]).fit(X, Y)
    assert est.n_iter_ == 3 and list(est.history_[:, "epoch"]) == [1, 2, 3]
    assert len(weights.after_epoch) == 1  # resumed after the 2 saved epochs, not trained afresh
    settings = _manifest(folder)["settings"]
    assert settings["params"]["gradient_adjustment"] == "htlnet" and "max_iter" not in settings["params"]
    assert re.fullmatch(r"[0-9a-f]{64}", settings["data"]["sha256"]) and settings["data"]["rows"] == len(X)


def test_a_checkpoint_without_a_fingerprint_of_its_fit_is_refused(funnel, folder):
    """A manifest whose settings hold only the net's spec (sk_htlnet before the fingerprint)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["settings"] = {k: v for k, v in manifest["settings"].items() if k not in ("params", "data")}
    path.write_text(json.dumps(manifest))
    with _refused(folder, r"holds a checkpoint of another model or other data: it does not record the "
                          r"parameters and data of its fit \(written by an earlier sk_htlnet"):
        HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder).fit(*funnel)


# ---- a lost manifest (B2) -----------------------------------------------------------------------------
def test_a_checkpoint_whose_manifest_is_gone_is_refused(funnel, folder):
    (folder / "manifest.json").unlink()
    kept = sorted(p.name for p in folder.iterdir())
    with _refused(folder, r"holds files of epoch 2 \(.*params-000002\.pt.*\) but no manifest\.json.*" + REMEDY):
        HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder).fit(*funnel)
    assert sorted(p.name for p in folder.iterdir()) == kept  # nothing deleted


def test_first_epoch_files_without_a_manifest_start_afresh(funnel, tmp_path):
    """What a fit killed while writing its first epoch leaves (also a first epoch whose manifest was
    deleted: the two cannot be told apart, and at most one epoch is lost)."""
    X, Y = funnel
    folder = tmp_path / "ckpt"
    HTLNetRegressor(**{**FAST, "max_iter": 1}, checkpoint_dir=folder).fit(X, Y)
    (folder / "manifest.json").unlink()
    est = HTLNetRegressor(**FAST, checkpoint_dir=folder).fit(X, Y)
    assert est.n_iter_ == 2 and list(est.history_[:, "epoch"]) == [1, 2] and _manifest(folder)["epochs"] == 2


# ---- the folder removed or replaced during the fit (B3) ------------------------------------------------
class _AtEpoch2(Callback):
    def __init__(self, action):
        self.action = action

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == 2:
            self.action()


def _remove(folder):
    shutil.rmtree(folder)


def _remove_and_recreate(folder):  # another fit made a new folder (and its own lock file) there
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "checkpoint.lock").write_text("")


def _replace_by_a_file(folder):
    shutil.rmtree(folder)
    folder.write_text("not a folder")


@pytest.mark.parametrize("action", [_remove, _remove_and_recreate, _replace_by_a_file])
def test_a_folder_removed_or_replaced_during_the_fit_stops_it(funnel, tmp_path, action):
    folder = tmp_path / "ckpt"
    est = HTLNetRegressor(**{**FAST, "max_iter": 3}, checkpoint_dir=folder,
                          callbacks=[_AtEpoch2(lambda: action(folder))])
    with pytest.raises(OSError, match=rf"checkpoint_dir='{re.escape(str(folder))}' was removed or replaced during "
                                      r"the fit") as caught:
        est.fit(*funnel)
    assert "still holds" not in str(caught.value)
    assert not folder.is_dir() or "manifest.json" not in os.listdir(folder)  # nothing written there


# ---- small things ---------------------------------------------------------------------------------------
def test_a_manifest_version_of_true_is_refused(funnel, folder):
    path = folder / "manifest.json"
    path.write_bytes(_set("version", True)(json.loads(path.read_text())))
    with _refused(folder, "of format 'sk_htlnet-checkpoint' version True, not 'sk_htlnet-checkpoint' version 1"):
        HTLNetRegressor(**{**FAST, "max_iter": 4}, checkpoint_dir=folder).fit(*funnel)


def test_a_tilde_in_checkpoint_dir_is_the_home_folder(funnel, tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    HTLNetRegressor(**FAST, checkpoint_dir="~/ck").fit(*funnel)
    assert _manifest(home / "ck")["epochs"] == 2 and not os.listdir(cwd)
    (home / "ck.txt").write_text("")
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*ck\.txt' exists and is not a folder"):
        HTLNetRegressor(**FAST, checkpoint_dir="~/ck.txt").fit(*funnel)


def test_resuming_a_checkpoint_with_max_iter_epochs_or_more_warns(tmp_path):
    # found by a new user: max_iter=2 on a 4-epoch checkpoint returned the 4-epoch model silently
    X, Y = make_funnel(300, random_state=0)
    params = dict(max_iter=4, batch_size=64, random_state=0, n_threads=1, checkpoint_dir=tmp_path / "ck")
    HTLNetRegressor(**params).fit(X, Y)
    with pytest.warns(UserWarning, match=r"holds a checkpoint of 4 epochs, and max_iter=2: no epoch is run"):
        est = HTLNetRegressor(**{**params, "max_iter": 2}).fit(X, Y)
    assert est.n_iter_ == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a resume with epochs left to run does not warn
        assert HTLNetRegressor(**{**params, "max_iter": 5}).fit(X, Y).n_iter_ == 5
