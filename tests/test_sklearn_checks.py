"""scikit-learn's own estimator checks on HTLNetRegressor (small, fast settings)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sk_htlnet import HTLNetRegressor

# Each entry is a check the estimator cannot pass by design, with the reason.
EXPECTED_FAILED_CHECKS = {
    "check_regressor_multioutput": (
        "fits continuous values in every column; a hybrid target's leading columns are binary "
        "funnel stages (0/1), so they are rejected with a clear error"
    ),
    "check_methods_subset_invariance": (
        "the network computes in float32: predicting a subset changes the matrix-multiply blocking, "
        "so predictions differ in the 7th significant digit (about 2e-7 relative), above the check's 1e-7"
    ),
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch training: repeating a row changes the number and make-up of the optimisation steps, "
        "so an integer weight cannot equal repetition; a weight scales the row's loss instead "
        "(tests/test_workflows.py checks that all-ones weights equal no weights and that weights matter)"
    ),
}


def _fast_estimator():
    return HTLNetRegressor(
        max_iter=40, learning_rate=0.01, embedding_dim=2, tower_units=(16,), label_embedding_dim=2,
        fusion_dim=4, batch_size=64, random_state=0,
    )


@parametrize_with_checks(
    [_fast_estimator()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
