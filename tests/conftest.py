import os

# Two OpenMP threads fighting another process for two cores slow torch down by an order of
# magnitude; tests run single-threaded (the estimator's results do not depend on it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Property tests draw the same examples on every run ("ci", the default), so a green commit stays
# green; `HYPOTHESIS_PROFILE=explore pytest tests/test_properties.py` searches new ones, 10x as many.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # the property tests skip themselves
    pass
else:
    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, max_examples=30)
    _hypothesis_settings.register_profile("explore", derandomize=False, database=None, max_examples=300)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
