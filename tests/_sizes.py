"""Network sizes shared by the test files: the smallest network that still learns a funnel, so a
fit takes about a second on one core."""

SMALL_NET = dict(embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=8, batch_size=256)
