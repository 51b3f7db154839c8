"""Head training: `samples` (TrainSample, held-out split), `heatmap_cache` (backbone heatmaps computed once), `augmentation` (batches), `loop` (train_head, DDP), `curve` (training-curve PNG)."""
