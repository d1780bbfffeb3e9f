"""LoREIN's own parts: configuration, blocks, objective, schedule, warm start, WNNM."""
