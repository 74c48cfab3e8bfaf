"""Training data: simulated cameras and procedural scenes, synthetic forgeries, users' datasets, batches."""
