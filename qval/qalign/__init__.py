"""Q-alignment track: environments with reference Q, evaluation points, scorers, agreement metrics."""
