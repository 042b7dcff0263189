"""The fitted state of :class:`~sk_htlnet.HTLNetRegressor` as plain data, and its inverse: the
documented interface through which :mod:`sk_htlnet.io` writes and reads model files (a mixin of
:class:`sk_htlnet._base.BaseHTLNet`)."""

import numpy as np
from sklearn.utils.validation import check_is_fitted

# the fitted attributes a state holds, by key (each attribute is the key with a trailing "_")
_FITTED = ("feature_encoder", "core_transform", "target_names", "n_stages", "n_iter", "core_loss",
           "target_transform", "n_features_in")


class _State:
    """``fitted_state`` and ``set_fitted_state`` of :class:`~sk_htlnet.HTLNetRegressor` (mixin)."""

    def fitted_state(self):
        """What a fitted estimator holds besides its parameters and its network's weights.

        Returns
        -------
        dict
            ``feature_encoder`` (FeatureEncoder), ``core_transform`` (CoreTransform),
            ``target_names`` (list of str), ``n_stages`` (int), ``n_iter`` (int), ``core_loss`` and
            ``target_transform`` (str, "auto" resolved), ``n_features_in`` (int),
            ``feature_names_in`` (list, or None for an array X), ``y_1d`` (bool: ``predict``
            returns (n,) rather than (n, 1)) and ``net_spec`` (dict of JSON values: the module's and
            the criterion's settings and the resolved ``batch_size``, from which
            :meth:`set_fitted_state` rebuilds the network).
            The objects are the estimator's own, not copies.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        """
        check_is_fitted(self, "net_")
        state = {key: getattr(self, key + "_") for key in _FITTED}
        names = getattr(self, "feature_names_in_", None)
        state.update(feature_names_in=None if names is None else list(names), y_1d=bool(self._y_1d),
                     net_spec=self._net_spec_)
        return state

    def set_fitted_state(self, state):
        """Make this estimator the fitted one that ``state`` describes, its network initialised.

        The network is built from ``state["net_spec"]`` on ``device`` with its initial weights:
        the caller then loads the trained ones into ``net_.module_`` (``load_state_dict``).  The
        values are taken as they are (:func:`sk_htlnet.io.load_model` checks a file's fields
        first); the parameters (``get_params``) stay those the estimator was made with and must be
        the ones the state was fitted with.  A later ``fit`` starts afresh; ``warm_start`` and
        ``partial_fit`` continue the network.

        Parameters
        ----------
        state : dict
            The keys of :meth:`fitted_state`.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If a key is missing, or the net spec's settings differ from those the parameters give
            (:meth:`param_settings`).
        """
        missing = sorted((set(_FITTED) | {"feature_names_in", "y_1d", "net_spec"}) - set(state))
        if missing:
            raise ValueError(f"set_fitted_state: the state lacks {missing}")
        for key in _FITTED:
            setattr(self, key + "_", state[key])
        if state.get("feature_names_in") is not None:
            self.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._y_1d = bool(state["y_1d"])
        spec, settings = state["net_spec"], self.param_settings()
        if not isinstance(spec.get("batch_size"), int) or spec["batch_size"] < 1 or (
                self.batch_size != "auto" and spec["batch_size"] != self.batch_size):
            raise ValueError(f"set_fitted_state: the state's net_spec needs the batch size it was fitted with "
                             f"(batch_size={self.batch_size!r} resolved), got {spec.get('batch_size')!r}")
        differ = sorted(f"{part}.{key}" for part in ("module", "criterion") for key, value in settings[part].items()
                        if spec[part].get(key) != value)
        if spec.get("architecture") != self.architecture or differ:
            raise ValueError(f"set_fitted_state: the state's net was built with other parameters than this "
                             f"estimator's (architecture {spec.get('architecture')!r}, settings {differ})")
        self._net_spec_ = spec
        self.batch_size_ = spec["batch_size"]
        net = self._make_net(self._net_spec_, seed=0, early=False)
        net.initialize()
        self.net_ = net
        self.history_ = net.history
        self._built_with = self._params_in_net()
        return self
