import os

# Two OpenMP threads fighting another process for two cores slow torch down by an order of
# magnitude; tests run single-threaded (the estimator's results do not depend on it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
