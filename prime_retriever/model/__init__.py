"""The predictor model: its architecture config, the network, checkpoints and the search-score confidence."""
