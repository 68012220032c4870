"""Train loops, one per model family; step functions are pure."""
