"""NeuMF (batch/rerank/ncf.py) and its script-mode entry point: the forward pass against a
hand-computed network, training determinism, negatives, the artifact without pickle."""

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from batch.rerank import entry, ncf
from batch.rerank.ncf import NCFError, NCFSettings, NeuMF

TINY = NCFSettings(factors=2, layers=(4, 3), dropout=0.0, epochs=2, batch_size=32, seed=1)


def _two_groups(n_users=40, n_items=20, seed=0):
    """Users 0..19 interact only with items 0..9 and users 20..39 only with 10..19."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        block = 0 if u < n_users // 2 else n_items // 2
        chosen = rng.choice(n_items // 2, 6, replace=False) + block
        users += [u] * 6
        items += chosen.tolist()
    return np.array(users), np.array(items), n_users, n_items


def _set_weights(model: NeuMF, rng) -> dict[str, np.ndarray]:
    weights = {name: rng.normal(size=t.shape).astype(np.float32) for name, t in model.state_dict().items()}
    model.load_state_dict({name: torch.from_numpy(w) for name, w in weights.items()})
    return weights


def test_forward_pass_equals_a_hand_computed_network():
    model = NeuMF(3, 4, TINY)
    w = _set_weights(model, np.random.default_rng(0))
    users, items = np.array([0, 2, 1, 2]), np.array([3, 0, 1, 1])
    gmf = w["gmf_user.weight"][users] * w["gmf_item.weight"][items]
    hidden = np.concatenate([w["mlp_user.weight"][users], w["mlp_item.weight"][items]], axis=1)
    hidden = np.maximum(hidden @ w["mlp.0.weight"].T + w["mlp.0.bias"], 0)
    logit = np.concatenate([gmf, hidden], axis=1) @ w["output.weight"][0] + w["output.bias"][0]
    expected = 1 / (1 + np.exp(-logit))
    np.testing.assert_allclose(ncf.predict(model, users, items), expected, rtol=1e-5)
    # each MLP embedding holds half the first layer; the output joins GMF and the last MLP layer
    assert w["mlp_user.weight"].shape == (3, 2) and w["output.weight"].shape == (1, 2 + 3)


def test_training_is_deterministic_per_seed_and_seeds_differ():
    users, items, n_users, n_items = _two_groups()
    state = torch.random.get_rng_state()
    first = ncf.train_ncf(users, items, n_users, n_items, TINY).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    again = ncf.train_ncf(users, items, n_users, n_items, TINY).state_dict()
    other = ncf.train_ncf(users, items, n_users, n_items, NCFSettings(**{**TINY.__dict__, "seed": 2})).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["gmf_user.weight"], other["gmf_user.weight"])


def test_neumf_learns_which_block_a_user_belongs_to():
    users, items, n_users, n_items = _two_groups()
    settings = NCFSettings(factors=8, layers=(16, 8), epochs=20, batch_size=128, lr=0.02, seed=0)
    model = ncf.train_ncf(users, items, n_users, n_items, settings)
    grid_u, grid_i = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    scores = ncf.predict(model, grid_u.ravel(), grid_i.ravel()).reshape(n_users, n_items)
    own = np.where(np.arange(n_users)[:, None] < 20, scores[:, :10].mean(1, keepdims=True),
                   scores[:, 10:].mean(1, keepdims=True))
    other = np.where(np.arange(n_users)[:, None] < 20, scores[:, 10:].mean(1, keepdims=True),
                     scores[:, :10].mean(1, keepdims=True))
    assert (own > other + 0.2).all()


def test_negatives_avoid_positives_and_follow_the_seed():
    users = np.array([0, 0, 1, 1, 1])
    items = np.array([0, 1, 2, 3, 4])
    positives = np.unique(users * 6 + items)
    neg_u, neg_i = ncf.sample_negatives(users, positives, 6, 5, np.random.default_rng(4))
    assert len(neg_u) == 25 and not np.isin(neg_u * 6 + neg_i, positives).any()
    np.testing.assert_array_equal(neg_i, ncf.sample_negatives(users, positives, 6, 5, np.random.default_rng(4))[1])
    # a user who has every item gets no negatives rather than false ones
    full_u, full_i = np.zeros(3, np.int64), np.arange(3)
    assert ncf.sample_negatives(full_u, np.unique(full_i), 3, 5, np.random.default_rng(0))[0].size == 0


def test_bad_pairs_and_settings_are_named():
    with pytest.raises(NCFError, match=r"items\[2\] = 7 is outside 0..4"):
        ncf.train_ncf(np.array([0, 1, 1]), np.array([0, 1, 7]), 2, 5, TINY)
    with pytest.raises(NCFError, match="differ in length"):
        ncf.check_pairs(np.array([0, 1]), np.array([0]), 2, 2)
    with pytest.raises(NCFError, match="1-d integer"):
        ncf.check_pairs(np.array([0.5]), np.array([0]), 2, 2)
    with pytest.raises(NCFError, match="layers"):
        NCFSettings(layers=(63, 8))
    with pytest.raises(NCFError, match="dropout"):
        NCFSettings(dropout=1.0)
    with pytest.raises(NCFError, match="unknown NCF hyperparameters"):
        NCFSettings.from_hyperparameters({"factor": "8"})
    with pytest.raises(NCFError, match="epochs: cannot read '2.5'"):
        NCFSettings.from_hyperparameters({"epochs": "2.5"})


def test_hyperparameters_are_strings_and_round_trip():
    settings = NCFSettings(layers=(32, 16, 8), lr=0.005, device="cpu")
    hp = settings.to_hyperparameters()
    assert hp["layers"] == "32,16,8" and all(isinstance(v, str) for v in hp.values())
    assert NCFSettings.from_hyperparameters(hp) == settings


def test_artifact_round_trip_without_pickle(tmp_path):
    users, items, n_users, n_items = _two_groups()
    model = ncf.train_ncf(users, items, n_users, n_items, TINY)
    paths = ncf.save_artifact(model, TINY, tmp_path / "model")
    assert sorted(p.name for p in paths) == ["model.npz", "settings.json"]
    with np.load(tmp_path / "model" / "model.npz", allow_pickle=False) as npz:
        assert set(npz.files) == set(model.state_dict()) and all(npz[k].dtype == np.float32 for k in npz.files)
    packed = ncf.pack_artifact(tmp_path / "model")
    assert packed == ncf.pack_artifact(tmp_path / "model")  # same files, same bytes
    (tmp_path / "model.tar.gz").write_bytes(packed)
    expected = ncf.predict(model, users, items)
    for source in (tmp_path / "model", tmp_path / "model.tar.gz", packed):
        loaded, settings = ncf.load_artifact(source)
        assert settings == TINY and (loaded.n_users, loaded.n_items) == (n_users, n_items)
        np.testing.assert_array_equal(ncf.predict(loaded, users, items), expected)


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def test_broken_artifacts_are_refused(tmp_path):
    model = NeuMF(2, 3, TINY)
    ncf.save_artifact(model, TINY, tmp_path)
    files = {n: (tmp_path / n).read_bytes() for n in ("model.npz", "settings.json")}
    packed = _tar_gz({"./" + n: d for n, d in files.items()})  # SageMaker's ./-prefixed names are read
    assert ncf.load_artifact(packed)[1] == TINY
    with pytest.raises(NCFError, match="more than 1,000 bytes"):
        ncf.load_artifact(packed, limit=1000)
    with pytest.raises(NCFError, match="truncated"):
        ncf.load_artifact(packed[: len(packed) // 2])
    with pytest.raises(NCFError, match="lacks settings.json"):
        ncf.load_artifact(_tar_gz({"model.npz": files["model.npz"]}))
    other = json.loads(files["settings.json"])
    other["n_items"] = 4
    with pytest.raises(NCFError, match="does not match its settings"):
        ncf.load_artifact(_tar_gz({**files, "settings.json": json.dumps(other).encode()}))
    pickled = io.BytesIO()
    np.savez(pickled, **{"gmf_user.weight": np.array([object()], dtype=object)})
    with pytest.raises(NCFError, match="unreadable"):
        ncf.load_artifact(_tar_gz({**files, "model.npz": pickled.getvalue()}))


def test_entry_main_trains_from_the_channel_into_the_model_dir(tmp_path):
    users, items, n_users, n_items = _two_groups()
    (tmp_path / "train").mkdir()
    ncf.save_interactions(tmp_path / "train" / "interactions.npz", users, items, n_users, n_items)
    env = {"SM_CHANNEL_TRAIN": str(tmp_path / "train"), "SM_MODEL_DIR": str(tmp_path / "model")}
    argv = sum(([f"--{k}", v] for k, v in TINY.to_hyperparameters().items()), [])
    entry.main(argv + ["--sagemaker_program", "entry.py"], env)
    loaded, settings = ncf.load_artifact(tmp_path / "model")
    assert settings == TINY
    local = ncf.train_ncf(users, items, n_users, n_items, TINY)  # the local engine's path: same weights
    np.testing.assert_array_equal(ncf.predict(loaded, users, items), ncf.predict(local, users, items))
    with pytest.raises(SystemExit):
        entry.main(["--epoch", "3"], env)
    with pytest.raises(NCFError, match="no interactions.npz"):
        entry.main([], {**env, "SM_CHANNEL_TRAIN": str(tmp_path)})


def test_entry_runs_as_a_script_without_topx(tmp_path):
    """As in the container: the two files alone in a directory, ``batch`` unimportable."""
    code = tmp_path / "code"
    code.mkdir()
    for name in ("entry.py", "ncf.py"):
        shutil.copy(Path(ncf.__file__).with_name(name), code / name)
    users, items, n_users, n_items = _two_groups()
    (tmp_path / "train").mkdir()
    ncf.save_interactions(tmp_path / "train" / "interactions.npz", users, items, n_users, n_items)
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(tmp_path / "train"), "SM_MODEL_DIR": str(tmp_path / "model")}
    blocker = ("import runpy, sys; sys.modules['batch'] = None; sys.path.insert(0, '.'); "
               "sys.argv = ['entry.py', '--epochs', '1', '--layers', '8,4']; "
               "runpy.run_path('entry.py', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocker], cwd=code, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ncf.load_artifact(tmp_path / "model")[1] == NCFSettings(epochs=1, layers=(8, 4))
