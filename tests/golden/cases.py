"""The golden cases: a fixed, covering set of seeded fits whose predictions are recorded in
``predictions.npz`` (issue 15, first acceptance step: before any code moves in the redesign).

Each case is a plain dict:

``name``
    Unique identifier; the key of the case's array in ``predictions.npz``.
``params``
    Estimator parameters on top of :data:`BASE_PARAMS` (the tiny network of ``tests/_sizes.py``,
    two epochs, ``random_state=0``, one thread).
``data``
    The data set, on top of :data:`BASE_DATA`: ``make_funnel(n + N_PREDICT, n_stages=k, ...)`` with
    ``seed`` as ``random_state``; the first ``n`` rows are the training rows, the last
    :data:`N_PREDICT` rows (the same funnel, never trained on) are the rows predicted.  Options:
    ``missing_rate`` (NaN numeric features, also in the predicted rows), ``core_shift`` (added to
    the core target: a negative shift makes a signed core), ``missing_labels`` (share of NaN labels
    in the last stage and in the core, training rows only), ``sample_weight`` (seeded weights in
    [0.5, 2]) and ``y_1d`` (k = 0 with y as a 1-D Series of the core).

``mode``
    ``"fit"`` (predictions of the fitted model), ``"save_load"`` (``sk_htlnet.io.save_model`` then
    ``load_model``; predictions of the loaded model) or ``"partial_fit"`` (two ``partial_fit`` calls
    on the two halves of the training rows, in order).

Before each case the global torch generator is seeded (``torch.manual_seed(0)`` inside
``torch.random.fork_rng``, so the caller's state is restored), a guard: since dropout draws from the
net's own seeded state, no case reads it.

The set covers, not crosses: every ``architecture``, ``gradient_adjustment``, ``numeric_encoding``
and ``core_loss`` (MSE with ``target_transform`` "log1p", "standardize" and "none"); every
``retransformation`` with log1p, "isotonic" and "none" with ZILN, "isotonic" with Tweedie;
k = 0 .. 3 stages; sample weights; missing labels and features; early stopping (explicit, and
"auto" above 10,000 rows); a save/load round trip; partial_fit; and HTLNet's fusion, sampling,
sparse/dense optimiser and ablation switches.  Each case names what it adds; everything it does
not name is the default (HTLNet, its gradient rule, piecewise-linear numeric encoding, "auto" core
loss, which is ZILN for amounts, k = 2).

Adding, removing or changing a case changes what is recorded: re-record with
``python tests/golden/make_golden.py`` and say so in the issue's note.
"""

BASE_PARAMS = dict(
    embedding_dim=4,
    tower_units=(16, 8),
    label_embedding_dim=4,
    fusion_dim=8,
    batch_size=128,
    max_iter=2,
    random_state=0,
    n_threads=1,
)

BASE_DATA = dict(n=400, k=2, seed=0, n_categorical=3, n_numeric=3, cardinality=10)

N_PREDICT = 50


def _case(name, mode="fit", data=None, **params):
    return dict(name=name, params=params, data=dict(data or {}), mode=mode)


CASES = [
    # ---- architectures (default gradient rule, k = 2, ZILN core) -----------------------------
    _case("arch_htlnet"),
    _case("arch_single_task", architecture="single_task"),
    _case("arch_shared_bottom", architecture="shared_bottom"),
    _case("arch_mmoe", architecture="mmoe"),
    _case("arch_ple", architecture="ple"),
    _case("arch_esmm", architecture="esmm"),
    _case("arch_aitm", architecture="aitm"),
    # ---- gradient strategies ("htlnet" is arch_htlnet) ---------------------------------------
    _case("grad_none", gradient_adjustment="none"),
    _case("grad_pcgrad", gradient_adjustment="pcgrad"),
    _case("grad_metabalance", gradient_adjustment="metabalance", relax_factor=0.5),
    _case("grad_uncertainty", gradient_adjustment="uncertainty"),
    _case("grad_htlnet_ablations", gradient_projection=False, gradient_rescaling=False, clip_ratio=2.0),
    # ---- numeric encodings ("piecewise_linear" is arch_htlnet) -------------------------------
    _case("enc_linear", numeric_encoding="linear"),
    _case("enc_quantile", numeric_encoding="quantile", n_bins=8),
    _case("enc_periodic", numeric_encoding="periodic"),
    # ---- core losses and retransformations ---------------------------------------------------
    _case("loss_mse_log1p_isotonic", core_loss="mse", target_transform="log1p", retransformation="isotonic"),
    _case("loss_mse_log1p_smearing", core_loss="mse", target_transform="log1p", retransformation="smearing"),
    _case("loss_mse_log1p_none", core_loss="mse", target_transform="log1p", retransformation="none"),
    _case("loss_mse_standardize_signed", data=dict(core_shift=-5.0), core_loss="mse", target_transform="standardize"),
    _case("loss_mse_none", core_loss="mse", target_transform="none"),
    _case("loss_ziln_retrans_none", core_loss="ziln", retransformation="none"),
    _case("loss_tweedie_isotonic", core_loss="tweedie", tweedie_power=1.3),
    # ---- number of stages (k = 2 is everywhere else) -----------------------------------------
    _case("k0_1d_y", data=dict(k=0, y_1d=True)),
    _case("k0_1d_y_mse_log1p", data=dict(k=0, y_1d=True), core_loss="mse", target_transform="log1p"),
    _case("k1", data=dict(k=1)),
    _case("k3", data=dict(k=3)),
    # ---- data: weights, missing values, early stopping ---------------------------------------
    _case("sample_weight", data=dict(sample_weight=True)),
    _case("missing_labels_and_features", data=dict(missing_labels=0.3, missing_rate=0.2), core_loss="mse"),
    _case("early_stopping_true", early_stopping=True, validation_fraction=0.2),
    _case("early_stopping_auto_10001_rows", data=dict(n=10_001)),
    # recorded after the redesign: the validation split's funnel depth was the sum of the stages
    # and is now sk_htlnet.data.funnel_depth (leading stages passed), which differs on such rows
    _case("early_stopping_skipped_stages", data=dict(skipped_stages=12), early_stopping=True,
          validation_fraction=0.2),
    # ---- HTLNet switches ---------------------------------------------------------------------
    _case("htlnet_concat_relaxed", fusion="concat", label_sampling="relaxed", tau=0.5),
    _case("htlnet_dense_adam_decay", sparse_updates=False, weight_decay=1e-4),
    # dropout drew its masks from torch's global generator (found while recording: two fits with
    # the same random_state differed); it now draws from the net's own seeded state, and this case
    # was recorded after that change
    _case("htlnet_dropout", dropout=0.1),
    _case(
        "htlnet_no_leu_no_transfer_pos_weight",
        label_embedding=False, representation_transfer=False, stop_gradient=False,
        stage_pos_weight=2.0, task_weights=[1.0, 0.5, 2.0],
    ),
    # ---- persistence and incremental fitting -------------------------------------------------
    _case("save_load_htlnet", mode="save_load"),
    _case(
        "save_load_mmoe_quantile_log1p", mode="save_load",
        architecture="mmoe", numeric_encoding="quantile", core_loss="mse", target_transform="log1p",
    ),
    _case("partial_fit_htlnet", mode="partial_fit"),
    _case("partial_fit_ple_standardize_signed", mode="partial_fit", data=dict(core_shift=-5.0), architecture="ple",
          core_loss="mse", target_transform="standardize"),
]

assert len({c["name"] for c in CASES}) == len(CASES), "case names must be unique"
